"""The incremental SSE decoder: line endings, chunk splits, comments, fields, BOM, close()."""

from __future__ import annotations

import pytest

from server.core.sse import SSEDecoder, SSEEvent


def decode(*chunks: bytes) -> list[SSEEvent]:
    """Feed every chunk to one decoder, then close it; return all events."""
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.close())
    return events


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_every_line_ending_gives_the_same_events(eol: str) -> None:
    """LF, CRLF and CR each end lines; a blank line dispatches the event."""
    text = eol.join(["data: a", "data: b", "", "event: x", "data: c", "", ""])
    decoder = SSEDecoder()
    assert decoder.feed(text.encode()) == [SSEEvent("a\nb"), SSEEvent("c", "x")]
    assert decoder.close() == []


def test_cr_ending_one_chunk_and_lf_opening_the_next_is_one_line_end() -> None:
    """A CRLF split between two chunks is one line ending, not a line and a blank line."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r") == [SSEEvent("a\nb")]
    assert decoder.feed(b"\n") == []
    assert decoder.close() == []


def test_a_lone_cr_at_a_chunk_end_followed_by_cr_is_a_blank_line() -> None:
    """CR then CR (across chunks) is a line end then an empty line: the event dispatches."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\rdata: b\r\r") == [SSEEvent("a"), SSEEvent("b")]


@pytest.mark.parametrize(
    "chunks",
    [
        [b"data: a\r", b"", b"\ndata: b\r\n\r\n"],
        [b"data: a\r", b"", b"", b"\n", b"data: b\r", b"", b"\n\r", b"", b"\n"],
    ],
    ids=["one-empty-chunk", "many-empty-chunks"],
)
def test_empty_chunks_between_cr_and_lf_keep_them_one_line_end(chunks: list[bytes]) -> None:
    """Empty chunks between the CR and the LF of one CRLF do not split the event."""
    assert decode(*chunks) == [SSEEvent("a\nb")]


def test_a_partial_utf8_chunk_after_cr_keeps_the_cr_a_line_end() -> None:
    """CR, then a chunk holding half of 'é', then the rest: two lines, no lost character."""
    assert decode(b"data: a\r", b"data: \xc3", b"\xa9\r\n\r\n") == [SSEEvent("a\n\u00e9")]


STREAM = (
    "\ufeff: keep-alive\r\n"
    'data: {"c":"caf\u00e9 \U0001f680"}\r\n'
    "\r\n"
    ": OPENROUTER PROCESSING\n"
    "event: error\n"
    "data: line one\n"
    "data: l\u00e9\n"
    "\n"
    "id: 7\r"
    "data: \U0001f680\r"
    "\r"
    "data: [DONE]\n"
    "\n"
).encode()

STREAM_EVENTS = [
    SSEEvent('{"c":"caf\u00e9 \U0001f680"}'),
    SSEEvent("line one\nl\u00e9", "error"),
    SSEEvent("\U0001f680", None, "7"),
    SSEEvent("[DONE]"),
]


def test_the_reference_stream_decodes_whole() -> None:
    """The reference stream fed in one piece gives the expected events."""
    assert decode(STREAM) == STREAM_EVENTS


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_a_split_at_any_byte_gives_the_same_events(cut: int) -> None:
    """Splitting the stream at any byte (mid-CRLF, mid-UTF-8, mid-BOM) changes nothing."""
    assert decode(STREAM[:cut], STREAM[cut:]) == STREAM_EVENTS


def test_every_two_cuts_give_the_same_events() -> None:
    """Every pair of cut points (three chunks) gives the same events."""
    n = len(STREAM)
    for i in range(n + 1):
        for j in range(i, n + 1):
            assert decode(STREAM[:i], STREAM[i:j], STREAM[j:]) == STREAM_EVENTS, (i, j)


def test_byte_by_byte_gives_the_same_events() -> None:
    """Feeding one byte at a time gives the same events."""
    assert decode(*(STREAM[i : i + 1] for i in range(len(STREAM)))) == STREAM_EVENTS


def test_events_come_out_as_soon_as_their_blank_line_arrives() -> None:
    """feed() returns an event the moment its blank line is complete, not at close()."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\n") == [SSEEvent("a")]
    assert decoder.feed(b"data: b\n\ndata: c\n\n") == [SSEEvent("b"), SSEEvent("c")]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b": keep-alive\n\ndata: a\n\n", [SSEEvent("a")]),
        (b": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\n", []),
        (b"data: a\n: comment between lines\ndata: b\n\n", [SSEEvent("a\nb")]),
        (b":\n\n", []),
    ],
    ids=["keep-alive", "openrouter", "between-data-lines", "bare-colon"],
)
def test_comments_are_dropped(raw: bytes, expected: list[SSEEvent]) -> None:
    """Comment lines make no event and do not break the event around them."""
    assert decode(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"event: error\ndata: x\n\n", [SSEEvent("x", "error")]),
        (b"data: x\nevent: first\nevent: last\n\n", [SSEEvent("x", "last")]),
        (b"event: error\ndata: x\n\ndata: y\n\n", [SSEEvent("x", "error"), SSEEvent("y")]),
        (b"event: lonely\n\ndata: y\n\n", [SSEEvent("y")]),
    ],
    ids=["event-field", "last-event-wins", "reset-after-dispatch", "event-without-data"],
)
def test_event_field(raw: bytes, expected: list[SSEEvent]) -> None:
    """``event:`` names the event it belongs to and is reset after each dispatch."""
    assert decode(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"data: a\ndata: b\ndata: c\n\n", "a\nb\nc"),
        (b"data:x\n\n", "x"),
        (b"data:  two spaces\n\n", " two spaces"),
        (b"data: a\ndata\n\n", "a\n"),
        (b"data: a:b: c\n\n", "a:b: c"),
        (b"data: \xff\n\n", "\ufffd"),
    ],
    ids=["multi-line", "no-space", "one-space-stripped", "no-colon", "colons", "bad-utf8"],
)
def test_data_values(raw: bytes, expected: str) -> None:
    """Data lines join with LF; one leading space is removed; bad UTF-8 becomes U+FFFD."""
    assert decode(raw) == [SSEEvent(expected)]


def test_unknown_fields_are_ignored() -> None:
    """``retry`` and unknown fields neither make nor break events; an id alone makes none."""
    raw = b"id: 1\nretry: 10\nfoo: bar\nDATA: no\ndata: yes\nbaz\n\nid: 2\n\n"
    assert decode(raw) == [SSEEvent("yes", None, "1")]


@pytest.mark.parametrize(
    "chunks",
    [
        [b"\xef\xbb\xbfdata: a\n\n"],
        [b"\xef", b"\xbb", b"\xbf", b"data: a\n\n"],
        [b"\xef\xbb\xbf", b"data: a\n\n"],
    ],
    ids=["whole", "byte-by-byte", "bom-alone"],
)
def test_a_leading_bom_is_ignored(chunks: list[bytes]) -> None:
    """A UTF-8 BOM opening the stream is dropped, however it is split."""
    assert decode(*chunks) == [SSEEvent("a")]


def test_only_the_first_bom_is_special() -> None:
    """A BOM later in the stream is data: it makes the field name unknown."""
    assert decode(b"data: a\n\n", b"\xef\xbb\xbfdata: b\n\n") == [SSEEvent("a")]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"data: a\n"], [SSEEvent("a")]),
        ([b"data: a"], [SSEEvent("a")]),
        ([b"data: a\ndata: b"], [SSEEvent("a\nb")]),
        ([b"event: e\ndata: a\r"], [SSEEvent("a", "e")]),
        ([b"data: caf\xc3"], [SSEEvent("caf\ufffd")]),
        ([b""], []),
        ([b": only a comment"], []),
        ([b"data: a\n\n"], [SSEEvent("a")]),
    ],
    ids=[
        "no-blank-line",
        "no-newline",
        "two-lines-no-newline",
        "trailing-cr",
        "truncated-utf8",
        "empty",
        "comment",
        "already-dispatched",
    ],
)
def test_close_flushes_what_is_pending(chunks: list[bytes], expected: list[SSEEvent]) -> None:
    """close() dispatches an event with no final blank line and a last line with no newline."""
    decoder = SSEDecoder()
    fed: list[SSEEvent] = []
    for chunk in chunks:
        fed.extend(decoder.feed(chunk))
    assert fed + decoder.close() == expected


def test_close_returns_only_the_pending_event() -> None:
    """close() does not repeat events feed() already returned."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: b") == [SSEEvent("a")]
    assert decoder.close() == [SSEEvent("b")]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"data:\n\ndata: a\n\n", [SSEEvent("a")]),
        (b"data\n\n", []),
        (b"event: x\ndata: \n\n", []),
        (b"data:\ndata:\n\n", [SSEEvent("\n")]),
        (b"data:", []),
    ],
    ids=["data-colon", "data-no-colon", "with-event", "two-empty-lines", "at-close"],
)
def test_an_empty_data_buffer_dispatches_nothing(raw: bytes, expected: list[SSEEvent]) -> None:
    """An event whose data buffer is empty is not dispatched (WHATWG HTML 9.2.6)."""
    assert decode(raw) == expected


def test_id_field_is_reported_with_its_event() -> None:
    """An `id:` line names its event; an id with NUL is ignored; the next event has none."""
    decoder = SSEDecoder()
    events = decoder.feed(b"id: e1:5\nevent: delta\ndata: {}\n\nid: a\x00b\ndata: x\n\ndata: y\n\n")
    assert events == [SSEEvent("{}", "delta", "e1:5"), SSEEvent("x"), SSEEvent("y")]
