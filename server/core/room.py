"""A room's state: seq and epoch, the retained log, turns, resume decisions, idempotency.

Everything that changes the room goes through here and comes back as sequenced events for
the driver to publish. One streaming turn at a time (PROTOCOL.md, "Words").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .codes import ErrorCode
from .errors import UPSTREAM_TIMEOUT_MESSAGE, ClientError, turn_in_progress
from .event_log import EventLog
from .history import ChatMessage, history_messages
from .kept_turns import KeptTurns
from .merge import merge_choices
from .messages import (
    ChoiceDelta,
    ChoiceEnd,
    Delta,
    ErrorInfo,
    PromptRequest,
    ResponsePosition,
    SequencedEvent,
    Snapshot,
    TurnEnd,
    TurnEnding,
    TurnKind,
    TurnStart,
    TurnStatus,
    TurnView,
)
from .room_limits import RoomLimits, text_size
from .sse import SSEEvent
from .turn import Turn
from .types import RoomName, TurnId, UpstreamApi

# Idempotency keys are kept while their turn is retained or in the log, within this cap.
MAX_PROMPT_IDS = 4096


@dataclass(frozen=True, slots=True)
class StoredRoom:
    """What a broker keeps of a room: enough for any instance to rebuild its state."""

    seq: int
    turn_count: int
    ended: Sequence[tuple[TurnView, TurnKind]]
    events: Sequence[tuple[SequencedEvent, TurnKind]]
    now: float


@dataclass(frozen=True, slots=True)
class TurnStarted:
    """What a prompt did: started ``turn`` at ``seq`` (``event`` set) or found it by its id."""

    turn: TurnId
    seq: int
    event: TurnStart | None


class RoomState:
    """The sans-I/O state of one room on one epoch."""

    def __init__(
        self,
        name: RoomName,
        epoch: str,
        limits: RoomLimits | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.epoch = epoch
        self.limits = limits or RoomLimits()
        self.seq = 0
        self.viewers = 0
        self.turn_count = 0
        self._secrets = secrets
        self._log = EventLog(self.limits)
        self.turns = KeptTurns(self.limits)  # read-only for drivers: view, kind, position
        self._streaming: Turn | None = None
        self._prompt_ids: OrderedDict[str, tuple[TurnId, int]] = OrderedDict()

    # --- turns ---------------------------------------------------------------------------

    @property
    def streaming_turn(self) -> TurnId | None:
        """The id of the turn streaming now, if any."""
        return None if self._streaming is None else self._streaming.id

    def prompt_turn(self, prompt_id: str) -> TurnStarted | None:
        """The turn a prompt with this id started, if the room still knows it (a replay)."""
        known = self._prompt_ids.get(prompt_id)
        return None if known is None else TurnStarted(turn=known[0], seq=known[1], event=None)

    def start_turn(
        self,
        request: PromptRequest,
        *,
        turn_id: TurnId,
        model: str,
        now: float,
        kind: TurnKind = "room",
        api: UpstreamApi = "chat",
    ) -> TurnStarted:
        """Start a turn, or return the one this prompt's id already started.

        ``api`` is the API its upstream stream speaks: it picks how ``feed`` reads events.

        Raises:
            ClientError: ``turn_in_progress`` (temporary) while another turn streams.
        """
        if request.id is not None and request.id in self._prompt_ids:
            known, seq = self._prompt_ids[request.id]
            return TurnStarted(turn=known, seq=seq, event=None)
        if self._streaming is not None:
            raise turn_in_progress(request.id)
        budget = self.limits.history_bytes
        if kind == "room" and budget and text_size(request.content) > budget:
            raise ClientError(
                ErrorCode.TOO_LARGE, f"the prompt is over the history budget of {budget} bytes"
            )
        seq = self._next_seq()
        turn = Turn(turn_id, request, model, now, kind, seq, self._secrets, api)
        self.turns.add(turn)
        self._streaming = turn
        self.turn_count += 1
        if request.id is not None:
            self._prompt_ids[request.id] = (turn_id, seq)
        event = TurnStart(seq=seq, turn=turn_id, prompt=turn.prompt, model=model, started_at=now)
        self._append(event)
        self._prune_prompt_ids()
        return TurnStarted(turn=turn_id, seq=seq, event=event)

    def feed(self, turn_id: TurnId, sse: SSEEvent, now: float) -> list[SequencedEvent]:
        """Apply one upstream SSE event to a streaming turn; return the events it made."""
        return self.feed_many(turn_id, (sse,), now)

    def feed_many(
        self,
        turn_id: TurnId,
        batch: Sequence[SSEEvent],
        now: float,
        relay: Callable[[SSEEvent], object] | None = None,
    ) -> list[SequencedEvent]:
        """Apply SSE events that arrived together: their growth goes out as ONE delta.

        When fanning out takes longer than the upstream's gap between chunks, chunks wait in
        the socket; taking them together makes one fan-out round per read instead of one per
        chunk, so the rounds follow the server's pace, not the model's. Lossless: the delta
        carries every string that grew. An end (``[DONE]``, an error) comes after it, and
        events after an end change nothing.

        ``relay`` (the tap's caller) is given each event the turn took and went on after, and
        never any after its end, so what the caller gets agrees with the room. The event that
        ended the turn is given only when it is a Responses terminal or error event (the SDKs
        need it: ``Turn.relays_ending``); chat's ``[DONE]`` and errors, and data that is not
        JSON, are not.
        """
        turn = self._streaming
        if turn is None or turn.id != turn_id:
            return []  # cancelled or ended already: late chunks change nothing
        grown: list[ChoiceDelta] = []
        ending: TurnEnding | None = None
        for sse in batch:
            ending = turn.take(sse, grown)
            if ending is not None:
                if relay is not None and turn.relays_ending():
                    relay(sse)
                break
            if relay is not None:
                relay(sse)
        out: list[SequencedEvent] = []
        if grown:
            delta = Delta(seq=self._next_seq(), turn=turn_id, choices=merge_choices(grown))
            self._append(delta)
            out.append(delta)
        if ending is not None:
            out.append(self._end(turn, ending.status, ending.error, now))
        return out

    def end_stream(self, turn_id: TurnId, now: float) -> TurnEnd | None:
        """The upstream body ended (or broke, or went idle): completed or truncated."""
        turn = self._streaming
        if turn is None or turn.id != turn_id:
            return None
        return self._end(turn, turn.natural_status(), None, now)

    def fail(self, turn_id: TurnId, error: ErrorInfo, now: float) -> TurnEnd | None:
        """The upstream failed (HTTP error, timeout before the stream): ``failed``."""
        turn = self._streaming
        if turn is None or turn.id != turn_id:
            return None
        return self._end(turn, "failed", error, now)

    def time_out(self, turn_id: TurnId, *, body_started: bool, now: float) -> TurnEnd | None:
        """The upstream went silent too long: ``truncated`` once its body began, else ``failed``."""
        if body_started:
            return self.end_stream(turn_id, now)
        error = ErrorInfo(ErrorCode.UPSTREAM_TIMEOUT, UPSTREAM_TIMEOUT_MESSAGE)
        return self.fail(turn_id, error, now)

    def check_cancel(self, turn_id: str) -> Turn:
        """The streaming turn ``turn_id``, which may be cancelled.

        Raises:
            ClientError: ``not_found`` for an unknown turn, ``turn_ended`` for an ended one.
        """
        turn = self.turns.get(TurnId(turn_id))
        if turn is None:
            raise ClientError(ErrorCode.NOT_FOUND, "no such turn in this room")
        if turn is not self._streaming:
            raise ClientError(ErrorCode.TURN_ENDED, "the turn has already ended")
        return turn

    def cancel(self, turn_id: str, now: float) -> TurnEnd:
        """Cancel a streaming turn.

        Raises:
            ClientError: ``not_found`` for an unknown turn, ``turn_ended`` for an ended one.
        """
        return self._end(self.check_cancel(turn_id), "cancelled", None, now)

    def _end(self, turn: Turn, status: TurnStatus, error: ErrorInfo | None, now: float) -> TurnEnd:
        turn.status = status
        turn.error = error
        turn.ended_at = now
        self._streaming = None
        event = TurnEnd(
            seq=self._next_seq(),
            turn=turn.id,
            status=status,
            choices=tuple(ChoiceEnd(i, r) for i, r in turn.acc.finish_reasons()),
            usage=turn.acc.usage,
            error=error,
        )
        self._append(event)
        self._keep(turn)
        return event

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _append(self, event: SequencedEvent) -> None:
        """Retain an event for resumes, within the count and byte budgets."""
        self._log.append(event, self.turns.bytes)

    def _keep(self, turn: Turn) -> None:
        """An ended turn is kept; the turns and the log share the byte budget."""
        self.turns.keep(turn)
        self._log.trim(self.turns.bytes)

    def _prune_prompt_ids(self) -> None:
        first_logged = self._log.first_seq(self.seq)
        while self._prompt_ids:
            key, (turn_id, seq) = next(iter(self._prompt_ids.items()))
            retained = turn_id in self.turns or seq >= first_logged
            if retained and len(self._prompt_ids) <= MAX_PROMPT_IDS:
                break
            del self._prompt_ids[key]

    # --- replicas: events another instance made -------------------------------------------

    def apply(
        self,
        event: SequencedEvent,
        now: float,
        kind: TurnKind = "room",
        api: UpstreamApi = "chat",
    ) -> None:
        """Apply the next sequenced event of this epoch, made by another instance.

        A turn changes only while it streams: events of turns this replica restored as
        ended (or never saw start) are only kept in the log, for resumes. ``api`` is the API
        of a turn a ``turn.start`` begins, should this replica read its upstream later.

        Raises:
            ValueError: when ``event.seq`` is not ``seq + 1``.
        """
        self._apply(event, now, kind, api, start=True)

    def _apply(
        self, event: SequencedEvent, now: float, kind: TurnKind, api: UpstreamApi, *, start: bool
    ) -> None:
        if event.seq != self.seq + 1:
            raise ValueError(f"expected seq {self.seq + 1}, got {event.seq}")
        self.seq = event.seq
        self._append(event)
        if isinstance(event, TurnStart):
            turn_id = TurnId(event.turn)
            if start and turn_id not in self.turns:
                self._streaming = Turn.started(event, kind, self._secrets, api)
                self.turns.add(self._streaming)
                self.turn_count += 1
            return
        turn = self._streaming
        if turn is not None and turn.id == event.turn and turn.apply(event, now):
            self._streaming = None
            self._keep(turn)

    @classmethod
    def restore(
        cls,
        name: RoomName,
        epoch: str,
        stored: StoredRoom,
        limits: RoomLimits | None = None,
        secrets: tuple[str, ...] = (),
        api: UpstreamApi = "chat",
    ) -> RoomState:
        """A replica of a room from what a broker keeps: ended turns, then the newest events.

        ``stored.events`` are consecutive and end at ``stored.seq``; the ended turns come
        oldest first. A turn whose ``turn.start`` is no longer kept is not in the snapshot.
        ``api`` is the API of the turn still streaming, if one is.
        """
        state = cls(name, epoch, limits, secrets)
        for view, kind in stored.ended:
            state._keep(Turn.ended(view, kind, secrets))
        state.seq = stored.events[0][0].seq - 1 if stored.events else stored.seq
        # Turns that ended are the stored views (newest last); the events rebuild only the
        # turn still streaming, so the order of turns stays the order they started in.
        ended = {e.turn for e, _ in stored.events if isinstance(e, TurnEnd)}
        for event, kind in stored.events:
            state._apply(event, stored.now, kind, api, start=event.turn not in ended)
        state.turn_count = stored.turn_count
        return state

    def seed_view(self, now: float) -> StoredRoom:
        """What this replica holds, for a broker that lost the room (a wipe).

        The ended turns it keeps and the live turn so far, as a ``turn.start`` and one delta
        with all its text, ending at ``seq`` (``restore`` rebuilds the same room from it).
        """
        live = self._streaming
        ended = [(t.view(), t.kind) for t in self.turns if t is not live]
        events: list[tuple[SequencedEvent, TurnKind]] = []
        if live is not None:
            grown = live.grown_so_far()
            start_seq = self.seq - 1 if grown and self.seq > live.seq else self.seq
            start = TurnStart(start_seq, live.id, live.prompt, live.model, live.started_at)
            events.append((start, live.kind))
            if start_seq < self.seq:
                events.append((Delta(seq=self.seq, turn=live.id, choices=grown), live.kind))
        return StoredRoom(self.seq, self.turn_count, ended, events, now)

    # --- reading -------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The newest turns, consistent with ``seq``."""
        newest = self.turns.newest(self.limits.snapshot_turns)
        return Snapshot(
            room=self.name, epoch=self.epoch, seq=self.seq, turns=tuple(t.view() for t in newest)
        )

    def resume_upstream(self, position: ResponsePosition) -> bool:
        """Go on with the streaming turn from another instance's upstream ``position``.

        False when that turn is not the one streaming here.
        """
        turn = self._streaming
        if turn is None or turn.id != position.turn:
            return False
        turn.resume_at(position)
        return True

    def resume(self, epoch: str, since: int) -> tuple[SequencedEvent, ...] | None:
        """Every event after ``since`` when all are retained on this epoch, else None."""
        return self._log.after(since, self.seq) if epoch == self.epoch else None

    def messages_for(self, turn_id: TurnId, system_prompt: str) -> list[ChatMessage]:
        """The chat messages sent upstream for a room turn: system, history, the prompt.

        The history is the newest earlier room turns that fit ``history_turns`` and, with
        the prompt, ``history_bytes``: older turns are left out first, whole.
        """
        prompt = self.turns[turn_id].prompt
        earlier = [t for t in self.turns if t.kind == "room" and t.id != turn_id]
        return history_messages(
            ((t.prompt, t.acc.content(0)) for t in earlier), prompt, system_prompt, self.limits
        )

    # --- viewers -------------------------------------------------------------------------

    def join(self) -> int:
        """One more viewer; returns the count."""
        self.viewers += 1
        return self.viewers

    def leave(self) -> int:
        """One viewer fewer; returns the count."""
        self.viewers = max(0, self.viewers - 1)
        return self.viewers

    def is_idle(self) -> bool:
        """No viewer and nothing streaming: the room may be forgotten after a while."""
        return self.viewers == 0 and self._streaming is None
