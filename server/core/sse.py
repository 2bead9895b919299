"""Incremental Server-Sent Events decoder: bytes in, events out (WHATWG HTML, 9.2.6).

Writes may split anywhere: mid-line, mid-CRLF, mid UTF-8 sequence.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: joined ``data``, its ``event`` and ``id`` fields (None if absent)."""

    data: str
    event: str | None = None
    id: str | None = None


class SSEDecoder:
    """Turns a byte stream into SSEEvents; comment lines and unknown fields are dropped."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._pending_cr = False
        self._first = True

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Decode ``chunk`` and return the events it completed."""
        return self._take(self._utf8.decode(chunk))

    def close(self) -> list[SSEEvent]:
        """End of stream: flush the last line and an event whose blank line never came.

        The spec discards such an event; providers that omit the final blank line are
        common enough that keeping it loses nothing and saves the last chunk.
        """
        events = self._take(self._utf8.decode(b"", final=True))
        if self._buffer:
            self._line(self._buffer, events)
            self._buffer = ""
        self._dispatch(events)
        return events

    def _take(self, text: str) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if self._first and text:
            # A UTF-8 byte order mark may open the stream (9.2.6) and is ignored.
            text = text.removeprefix("\ufeff")
            self._first = False
        if not text:
            return events  # nothing decoded yet: a pending CR still waits for its LF
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF whose CR ended the previous chunk
        self._pending_cr = False
        buf = self._buffer + text
        start = 0
        length = len(buf)
        while True:
            cr = buf.find("\r", start)
            lf = buf.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                self._line(buf[start:lf], events)
                start = lf + 1
                continue
            self._line(buf[start:cr], events)
            if cr + 1 < length:
                start = cr + 2 if buf[cr + 1] == "\n" else cr + 1
            else:
                self._pending_cr = True
                start = cr + 1
        self._buffer = buf[start:]
        return events

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
        self._event = None
        self._id = None
