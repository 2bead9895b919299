"""The turns a room keeps: the newest ended ones within the limits, and the one streaming."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from .messages import ResponsePosition, TurnKind, TurnView
from .responses_stream import ResponsesAccumulator
from .room_limits import RoomLimits, turn_size
from .turn import Turn
from .types import TurnId


class KeptTurns:
    """A room's turns, oldest first; what a driver may read of them, read-only."""

    def __init__(self, limits: RoomLimits) -> None:
        self._limits = limits
        self._turns: OrderedDict[TurnId, Turn] = OrderedDict()
        self.bytes = 0  # of the ended turns kept

    def __iter__(self) -> Iterator[Turn]:
        return iter(self._turns.values())

    def __contains__(self, turn_id: object) -> bool:
        return turn_id in self._turns

    def __getitem__(self, turn_id: TurnId) -> Turn:
        return self._turns[turn_id]

    def get(self, turn_id: TurnId) -> Turn | None:
        """The turn ``turn_id`` while it is kept."""
        return self._turns.get(turn_id)

    def add(self, turn: Turn) -> None:
        """A turn that starts now (it is the newest)."""
        self._turns[turn.id] = turn

    def keep(self, turn: Turn) -> None:
        """An ended turn is kept: measure it, then forget the oldest turns over the limits.

        Past the byte budget the room's event log gives way first (a resume then gets a
        snapshot), then the oldest ended turns; the newest turn always stays.
        """
        self._turns[turn.id] = turn
        turn.size = turn_size(turn.view())
        self.bytes += turn.size
        keep, budget = self._limits.kept_turns, self._limits.max_bytes
        while len(self._turns) > keep or (budget and len(self._turns) > 1 and self.bytes > budget):
            oldest = next(iter(self._turns.values()))  # ended: only the newest can stream
            self.bytes -= oldest.size
            del self._turns[oldest.id]

    def newest(self, count: int) -> list[Turn]:
        """The newest ``count`` turns (at least one), oldest first."""
        return list(self._turns.values())[-max(count, 1) :]

    def kind(self, turn_id: TurnId) -> TurnKind:
        """Whether a kept turn came from a room prompt or the tap (room when unknown)."""
        turn = self._turns.get(turn_id)
        return "room" if turn is None else turn.kind

    def view(self, turn_id: TurnId) -> TurnView | None:
        """One kept turn as it stands, or None once it is forgotten."""
        turn = self._turns.get(turn_id)
        return None if turn is None else turn.view()

    def repairs(self, turn_id: TurnId) -> int:
        """How many upstream values a kept turn's chunks needed repaired (core/repair.py)."""
        turn = self._turns.get(turn_id)
        return 0 if turn is None else turn.acc.repairs

    def skipped(self, turn_id: TurnId) -> int:
        """How many upstream events a kept Responses turn skipped (unknown or unusable)."""
        turn = self._turns.get(turn_id)
        acc = None if turn is None else turn.acc
        return acc.skipped if isinstance(acc, ResponsesAccumulator) else 0

    def position(self, turn_id: TurnId) -> ResponsePosition | None:
        """Where a kept Responses turn's stream has been read to, once known."""
        turn = self._turns.get(turn_id)
        return None if turn is None else turn.position()
