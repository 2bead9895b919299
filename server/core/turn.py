"""One turn of a room: its prompt, its answer so far, and how upstream events end it."""

from __future__ import annotations

from .accumulator import ChunkAccumulator, error_info
from .codes import ErrorCode
from .messages import (
    ChoiceDelta,
    Delta,
    ErrorInfo,
    PromptRequest,
    ResponsePosition,
    ToolCallDelta,
    TurnEnd,
    TurnEnding,
    TurnKind,
    TurnStart,
    TurnStatus,
    TurnView,
)
from .responses_stream import ResponsesAccumulator
from .sse import SSEEvent
from .types import TurnId, UpstreamApi


class Turn:
    """A turn's state; ``acc`` reads the API its upstream speaks (``api``)."""

    __slots__ = (
        "_secrets",
        "acc",
        "api",
        "ended_at",
        "error",
        "id",
        "kind",
        "model",
        "prompt",
        "seq",
        "size",
        "started_at",
        "status",
    )

    def __init__(
        self,
        turn_id: TurnId,
        request: PromptRequest,
        model: str,
        now: float,
        kind: TurnKind,
        seq: int,
        secrets: tuple[str, ...],
        api: UpstreamApi = "chat",
    ) -> None:
        self.id = turn_id
        self.prompt = request.content
        self.model = model
        self.kind = kind
        self.seq = seq
        self.started_at = now
        self.ended_at: float | None = None
        self.status: TurnStatus = "streaming"
        self.error: ErrorInfo | None = None
        self.api: UpstreamApi = api
        self.acc: ChunkAccumulator | ResponsesAccumulator = (
            ResponsesAccumulator(secrets) if api == "responses" else ChunkAccumulator(secrets)
        )
        self.size = 0  # measured once it has ended (``KeptTurns.keep``)
        self._secrets = secrets

    @classmethod
    def started(
        cls, event: TurnStart, kind: TurnKind, secrets: tuple[str, ...], api: UpstreamApi
    ) -> Turn:
        """A turn another instance started (a replica's), streaming from ``event``."""
        request = PromptRequest(event.prompt)
        turn_id = TurnId(event.turn)
        return cls(turn_id, request, event.model, event.started_at, kind, event.seq, secrets, api)

    @classmethod
    def ended(cls, view: TurnView, kind: TurnKind, secrets: tuple[str, ...]) -> Turn:
        """An ended turn as a broker keeps it (its view)."""
        turn = cls(
            TurnId(view.id),
            PromptRequest(view.prompt),
            view.model,
            view.started_at,
            kind,
            0,
            secrets,
        )
        for choice in view.choices:
            turn.acc.restore(choice)
        turn.acc.usage = view.usage
        turn.status, turn.error, turn.ended_at = view.status, view.error, view.ended_at
        return turn

    def apply(self, event: Delta | TurnEnd, now: float) -> bool:
        """Apply another instance's event of this turn; True when it ended the turn."""
        if isinstance(event, Delta):
            for choice in event.choices:
                self.acc.apply(choice)
            return False
        for end in event.choices:
            self.acc.finish(end.index, end.finish_reason)
        self.acc.usage = event.usage
        self.status, self.error, self.ended_at = event.status, event.error, now
        return True

    def grown_so_far(self) -> tuple[ChoiceDelta, ...]:
        """Everything the turn has, as one delta's choices (a seed after a wipe)."""
        return tuple(
            ChoiceDelta(
                view.index,
                view.content or None,
                view.reasoning or None,
                view.refusal or None,
                tuple(
                    ToolCallDelta(call.index, call.id, call.name, call.arguments or None)
                    for call in view.tool_calls
                ),
            )
            for view in self.acc.views()
        )

    def view(self) -> TurnView:
        """The turn as a snapshot shows it."""
        return TurnView(
            id=self.id,
            status=self.status,
            prompt=self.prompt,
            model=self.model,
            started_at=self.started_at,
            ended_at=self.ended_at,
            choices=self.acc.views(),
            usage=self.acc.usage,
            error=self.error,
        )

    def natural_status(self) -> TurnStatus:
        """How the turn ends when its upstream body does: ``completed`` or ``truncated``."""
        return "completed" if self.acc.all_finished() else "truncated"

    def take(self, sse: SSEEvent, grown: list[ChoiceDelta]) -> TurnEnding | None:
        """Feed one upstream SSE event to the accumulator; how the turn ends, if this ends it.

        Chat Completions: ``[DONE]`` ends it (``completed`` or ``truncated``); an ``error``
        event or object, or a chunk that is no object, ``failed``. Responses: the terminal
        event (``ResponsesAccumulator.ending``); a stray ``[DONE]`` ends it as the body's end
        would. Either way, data that is not JSON is ``failed`` with ``bad_chunk``.
        """
        if sse.data.strip() == "[DONE]":
            return TurnEnding(self.natural_status())
        acc = self.acc
        try:
            chunk = acc.parse(sse.data)  # repaired, never refused: core/repair.py
        except (ValueError, RecursionError):
            return TurnEnding(
                "failed",
                ErrorInfo(ErrorCode.BAD_CHUNK, "the upstream sent a chunk that is not JSON"),
            )
        if isinstance(acc, ResponsesAccumulator):
            grown.extend(acc.feed(chunk, sse.event))
            return acc.ending
        if sse.event == "error" or not isinstance(chunk, dict):
            raw = chunk.get("error", chunk) if isinstance(chunk, dict) else chunk
            return TurnEnding("failed", error_info(raw, self._secrets))
        grown.extend(acc.feed(chunk))
        return None if acc.error is None else TurnEnding("failed", acc.error)

    def relays_ending(self) -> bool:
        """Whether a tap caller is given the event that ended this turn.

        A Responses turn's terminal or ``error`` event, which the accumulator took: the SDKs
        need it (the final response, or the failure). Chat Completions' ending events are not
        relayed (the tap ends the caller's stream itself), nor a ``[DONE]`` or data that is not
        JSON, which end a Responses turn without the accumulator.
        """
        return isinstance(self.acc, ResponsesAccumulator) and self.acc.ending is not None

    def position(self) -> ResponsePosition | None:
        """Where a Responses stream can be re-attached; None for a chat turn or before known."""
        acc = self.acc
        return acc.position(self.id) if isinstance(acc, ResponsesAccumulator) else None

    def resume_at(self, position: ResponsePosition) -> None:
        """Read the rest of a Responses stream another instance began (a replica's turn).

        The text so far stays; what follows ``position`` extends it.
        """
        acc = ResponsesAccumulator(self._secrets)
        for choice in self.acc.views():
            acc.restore(choice)
        acc.usage, acc.repairs = self.acc.usage, self.acc.repairs
        acc.resume_at(position)
        self.acc, self.api = acc, "responses"
