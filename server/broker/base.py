"""The broker contract: what a room needs from the store that instances share.

A room's sequenced events live in the broker (bounded), with its epoch and the views of its
ended turns, so any instance can rebuild the room. One instance at a time holds a room's
turn lease: a fence number that every write carries, so a holder whose lease was lost (it
stalled, it was cancelled elsewhere, the store was wiped) cannot publish any more. Live
events reach every instance that listens to the room, once per instance.

Backends: ``memory://`` (one process; several hubs may share it, as the contract tests do)
and ``redis://`` (several processes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from server.core.errors import BrokerError
from server.core.messages import TurnKind
from server.core.types import RoomName


@dataclass(frozen=True, slots=True)
class Record:
    """One sequenced event as the broker keeps it: its seq, its wire bytes, its turn's kind."""

    seq: int
    data: bytes
    kind: TurnKind = "room"


@dataclass(frozen=True, slots=True)
class Loaded:
    """A room as the broker keeps it (the epoch is created on first use)."""

    epoch: str
    seq: int
    turn_count: int
    ended: tuple[bytes, ...]  # stored ended turns, oldest first (``stored_turn``)
    records: tuple[Record, ...]  # consecutive, ending at ``seq``


@dataclass(frozen=True, slots=True)
class Seed(Loaded):
    """A room as one instance holds it, to store as the room's new epoch after a wipe.

    Its ``records`` are the live turn so far.
    """

    streaming: str | None  # the live turn's id, if any


ClaimStatus = Literal["ok", "known", "busy", "stale", "epoch", "orphan", "gone", "alive"]


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to ``claim`` or ``steal``.

    - ``ok``: the lease is yours with ``fence``; ``seq`` is the room's seq now.
    - ``known``: the prompt id already started ``turn`` at ``seq`` (idempotency).
    - ``busy``: another instance holds the lease (a turn is streaming).
    - ``stale``: your replica is behind: the room is at ``seq``.
    - ``epoch``: the room's history is not the one you know (wiped): reload.
    - ``orphan``: ``turn`` still streams but its holder's lease ran out: end it first.
    - ``gone``: (steal) that turn is not streaming any more.
    - ``alive``: (steal without force) its holder still renews the lease.
    """

    status: ClaimStatus
    fence: int = 0
    seq: int = 0
    turn: str | None = None


class Fenced(BrokerError):
    """A write was refused.

    The lease is lost, the seq is not the next one, or the epoch changed. Nothing of it was stored
    or published.
    """


class BrokerUnavailable(BrokerError):
    """The broker could not be reached in time."""


class BrokerListener(Protocol):
    """What a hub hears from the broker."""

    def on_record(self, room: RoomName, epoch: str, record: Record) -> None:
        """A sequenced event, live (any instance's, this one's own included)."""

    def on_presence(self, room: RoomName) -> None:
        """Some instance's viewer count for the room changed."""

    def on_reconnect(self) -> None:
        """The live feed was down and is back: anything may have been missed."""


class Broker(ABC):
    """The store and the live feed that a room's instances share."""

    instance: str
    lease_seconds: float
    events_heard: int = 0  # live records received, this instance's own included

    @abstractmethod
    async def start(self, listener: BrokerListener) -> None:
        """Connect and start delivering live records to ``listener``."""

    @abstractmethod
    async def close(self) -> None:
        """Stop delivering and disconnect (this instance's viewer counts are dropped)."""

    @abstractmethod
    async def listen(self, room: RoomName) -> None:
        """Deliver the room's live records here (reference counted with ``unlisten``)."""

    @abstractmethod
    async def unlisten(self, room: RoomName) -> None:
        """One listener fewer; at zero the instance stops receiving the room."""

    async def reachable(self) -> bool:
        """Whether the broker answers now (``/healthz``)."""
        return True

    async def forget(self, room: RoomName) -> None:  # noqa: B027 - optional
        """This instance forgot an idle room.

        A store that lives in this process drops it when no instance listens to it; Redis keys
        expire on their own.
        """

    @abstractmethod
    async def load(self, room: RoomName, new_epoch: str) -> Loaded:
        """The room as kept; ``new_epoch`` becomes its epoch when it has none."""

    @abstractmethod
    async def find(self, room: RoomName) -> Loaded | None:
        """The room as kept, or None when the broker has none (it is not created)."""

    @abstractmethod
    async def seed(self, room: RoomName, seed: Seed, *, lease: bool) -> int | None:
        """Store ``seed`` as the room's new epoch, unless the broker has a history of the room.

        The broker has none when it has no epoch for it, or an epoch with nothing in it.

        Returns:
            The fence of the turn lease (``lease``: the live turn streams on with it), else 0.
        """

    @abstractmethod
    async def epoch(self, room: RoomName) -> str | None:
        """The room's epoch now (None when the broker has no such room, e.g. wiped)."""

    @abstractmethod
    async def read(self, room: RoomName, epoch: str, after: int) -> tuple[Record, ...] | None:
        """Every record after seq ``after`` on ``epoch``, or None when some are gone."""

    @abstractmethod
    async def claim(self, room: RoomName, epoch: str, seq: int, prompt_id: str | None) -> Claim:
        """Take the room's turn lease to start a turn after ``seq``."""

    @abstractmethod
    async def steal(self, room: RoomName, epoch: str, turn: str, *, force: bool) -> Claim:
        """Take the lease of the streaming ``turn`` to end it.

        ``force`` to cancel it, else only when its holder's lease ran out.
        """

    @abstractmethod
    async def append(
        self,
        room: RoomName,
        epoch: str,
        fence: int,
        records: Sequence[Record],
        *,
        started: tuple[str, str | None] | None = None,
        ended: bytes | None = None,
        position: bytes | None = None,
    ) -> None:
        """Store and publish consecutive records after the room's seq, and renew the lease.

        ``started`` is ``(turn, prompt_id)`` with a ``turn.start``; ``ended`` (the stored
        turn, see ``Loaded.ended``) ends the turn and frees the lease. ``position`` is where
        the streaming turn's upstream response has been read to with these records (a
        re-attachable Responses stream), kept with them until the turn ends (``position``).

        Raises:
            Fenced: when the lease, the seq or the epoch does not match.
            BrokerUnavailable: when the broker cannot be reached.
        """

    @abstractmethod
    async def position(self, room: RoomName) -> bytes | None:
        """The streaming turn's upstream position as last appended, None when none is kept."""

    @abstractmethod
    async def renew(self, room: RoomName, fence: int) -> bool:
        """Extend the lease; False when it is no longer this fence's."""

    @abstractmethod
    async def release(self, room: RoomName, fence: int) -> None:
        """Give the lease back (a claim that started nothing)."""

    @abstractmethod
    async def set_viewers(self, room: RoomName, count: int, *, announce: bool = True) -> int:
        """Record this instance's viewer count (``announce``: tell the other instances).

        Returns the total. Counts of an instance that stops refreshing them expire.
        """

    @abstractmethod
    async def viewers(self, room: RoomName) -> int:
        """The room's viewers summed over live instances."""


def claim_status(status: str) -> ClaimStatus:
    """Validate a status read back from a backend."""
    allowed: Sequence[str] = ("ok", "known", "busy", "stale", "epoch", "orphan", "gone", "alive")
    if status not in allowed:
        raise ValueError(f"unknown claim status {status!r}")
    return status  # type: ignore[return-value]
