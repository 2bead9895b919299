"""Incremental Server-Sent Events decoder: bytes in, events out (WHATWG HTML, 9.2.6).

Writes may split anywhere: mid-line, mid-CRLF, mid UTF-8 sequence. Lines are cut on bytes
(CR and LF never occur inside a UTF-8 sequence) and decoded whole, so a read costs time in
proportion to its own length, whatever is already waiting: an unfinished line is kept in one
growing buffer and never searched again. A limit bounds what a line, or the data of one event,
may hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .codes import ErrorCode
from .errors import UpstreamError

_BOM = b"\xef\xbb\xbf"
_CR, _LF = 0x0D, 0x0A


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: joined ``data``, its ``event`` and ``id`` fields (None if absent)."""

    data: str
    event: str | None = None
    id: str | None = None


class LineTooLong(UpstreamError):
    """The upstream sent a line (or one event's data) longer than the limit: a bad chunk.

    ``events`` are those the same read completed before the line that went over.
    """

    def __init__(self, limit: int, events: Sequence[SSEEvent] = ()) -> None:
        super().__init__(
            ErrorCode.BAD_CHUNK, f"the upstream sent a line longer than the limit of {limit} bytes"
        )
        self.limit = limit
        self.events = list(events)


class _Overflow(Exception):
    """Raised inside the decoder; ``feed`` and ``close`` add the events completed so far."""


class SSEDecoder:
    """Turns a byte stream into SSEEvents; comment lines and unknown fields are dropped.

    Args:
        max_line_bytes: the longest line, and the most data one event may gather, in bytes
            (0: unlimited). Past it ``feed`` raises LineTooLong and the decoder is done.
    """

    def __init__(self, max_line_bytes: int = 0) -> None:
        self._limit = max_line_bytes
        self._line_start = bytearray()  # the unfinished line: never holds CR or LF
        self._data: list[str] = []
        self._data_bytes = 0
        self._event: str | None = None
        self._id: str | None = None
        self._pending_cr = False
        self._first = True

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Take ``chunk`` and return the events it completed.

        Raises:
            LineTooLong: a line or an event's data grew past ``max_line_bytes``.
        """
        events: list[SSEEvent] = []
        try:
            self._feed(chunk, events)
        except _Overflow:
            raise LineTooLong(self._limit, events) from None
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: flush the last line and an event whose blank line never came.

        The spec discards such an event; providers that omit the final blank line are
        common enough that keeping it loses nothing and saves the last chunk.

        Raises:
            LineTooLong: that last line took an event's data past ``max_line_bytes``.
        """
        events: list[SSEEvent] = []
        try:
            if self._line_start:
                self._line(self._take_line(b"", 0, 0), events)
        except _Overflow:
            raise LineTooLong(self._limit, events) from None
        self._dispatch(events)
        return events

    # --- lines ---------------------------------------------------------------------------

    def _feed(self, chunk: bytes, events: list[SSEEvent]) -> None:
        if not chunk:
            return  # a pending CR still waits for its LF
        start = 0
        if self._pending_cr:
            self._pending_cr = False
            if chunk[0] == _LF:
                start = 1  # the LF of a CRLF whose CR ended the previous chunk
        end = len(chunk)
        # Each position is searched once: the next CR and LF are remembered until passed.
        cr = chunk.find(b"\r", start)
        lf = chunk.find(b"\n", start)
        while cr != -1 or lf != -1:
            line_from = start
            if cr == -1 or (lf != -1 and lf < cr):
                stop, start = lf, lf + 1
            else:
                stop = cr
                if cr + 1 == end:
                    self._pending_cr = True
                    start = end
                else:
                    start = cr + 2 if chunk[cr + 1] == _LF else cr + 1
            self._line(self._take_line(chunk, line_from, stop), events)
            if cr != -1 and cr < start:
                cr = chunk.find(b"\r", start)
            if lf != -1 and lf < start:
                lf = chunk.find(b"\n", start)
        self._keep(chunk, start, end)

    def _keep(self, chunk: bytes, start: int, end: int) -> None:
        """Keep the unfinished tail of ``chunk`` for the next read."""
        if start == end:
            return
        if self._limit and len(self._line_start) + end - start > self._limit:
            raise _Overflow
        self._line_start += chunk[start:end] if start else chunk

    def _take_line(self, chunk: bytes, start: int, stop: int) -> str:
        """The complete line: what was kept, then ``chunk[start:stop]``, decoded."""
        kept = self._line_start
        size = len(kept) + stop - start
        if self._limit and size > self._limit:
            raise _Overflow
        if kept:
            kept += chunk[start:stop]
            raw: bytes | bytearray = kept
        else:
            raw = chunk[start:stop]
        if self._first:
            self._first = False
            if raw.startswith(_BOM):
                raw = raw[len(_BOM) :]  # a byte order mark may open the stream (9.2.6)
        text = raw.decode("utf-8", "replace")
        self._line_start = bytearray()
        return text

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            return  # a comment, e.g. OpenRouter's ": OPENROUTER PROCESSING" keep-alive
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data_bytes += len(value)
            if self._limit and self._data_bytes > self._limit:
                raise _Overflow
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._id = value

    def _dispatch(self, events: list[SSEEvent]) -> None:
        # An empty data buffer dispatches nothing (9.2.6), e.g. a bare "data:" keep-alive.
        if self._data and self._data != [""]:
            events.append(SSEEvent("\n".join(self._data), self._event, self._id))
        self._data = []
        self._data_bytes = 0
        self._event = None
        self._id = None
