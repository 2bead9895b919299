"""The SSE decoder's bounds: linear work however a line is split, and a line limit."""

from __future__ import annotations

import tracemalloc

import pytest

from server.core.sse import LineTooLong, SSEDecoder, SSEEvent


def transient_bytes(decoder: SSEDecoder, pieces: list[bytes]) -> int:
    """Bytes the decoder allocates beyond what it keeps, summed over every feed.

    A decoder that copies what it holds on every read allocates the whole held line each
    time (quadratic in total); one that appends the new bytes allocates about their size.
    """
    total = 0
    tracemalloc.start()
    try:
        for piece in pieces:
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            decoder.feed(piece)
            _, peak = tracemalloc.get_traced_memory()
            total += peak - before
    finally:
        tracemalloc.stop()
    return total


def one_byte_pieces(size: int) -> list[bytes]:
    """A ``data:`` line of ``size`` bytes with no line end, one byte per piece."""
    line = b"data: " + b"x" * (size - 6)
    return [line[i : i + 1] for i in range(len(line))]


@pytest.mark.parametrize("size", [20_000, 40_000])
def test_feeding_a_long_line_byte_by_byte_allocates_linearly(size: int) -> None:
    """N one-byte pieces of one line cost O(N) bytes of allocation, not O(N**2)."""
    pieces = one_byte_pieces(size)
    cost = transient_bytes(SSEDecoder(), pieces)
    # A quadratic decoder allocates about size**2 / 2 here (2e8 bytes for 20,000); a linear
    # one about 1 byte a piece, plus what a tracer (coverage) allocates per call.
    assert cost < 2_000 * size


def test_doubling_the_line_about_doubles_the_work() -> None:
    """The allocation of 40,000 pieces is about twice that of 20,000 (4x if quadratic)."""
    small = transient_bytes(SSEDecoder(), one_byte_pieces(20_000))
    large = transient_bytes(SSEDecoder(), one_byte_pieces(40_000))
    assert large < 3 * small


def test_the_long_line_still_decodes_whole() -> None:
    """After 1-byte pieces, the line's end dispatches the whole data, byte for byte."""
    decoder = SSEDecoder()
    for piece in one_byte_pieces(50_000):
        assert decoder.feed(piece) == []
    assert decoder.feed(b"\n\n") == [SSEEvent("x" * (50_000 - 6))]


def test_many_lines_in_one_chunk_are_found_in_one_pass() -> None:
    """A chunk of many short LF lines (no CR at all) decodes every event."""
    chunk = b"data: a\n\n" * 20_000
    assert SSEDecoder().feed(chunk) == [SSEEvent("a")] * 20_000


LIMIT = 64


@pytest.mark.parametrize(
    ("chunks", "events"),
    [
        ([b"data: " + b"x" * (LIMIT - 6) + b"\n\n"], [SSEEvent("x" * (LIMIT - 6))]),
        ([b"data: " + b"x" * (LIMIT - 6), b"\r\n\r\n"], [SSEEvent("x" * (LIMIT - 6))]),
        ([b"data: " + b"x" * (LIMIT - 6)], [SSEEvent("x" * (LIMIT - 6))]),
        ([b": " + b"c" * (LIMIT - 2) + b"\ndata: a\n\n"], [SSEEvent("a")]),
    ],
    ids=["whole", "kept-then-ended", "ended-by-close", "comment"],
)
def test_a_line_at_the_limit_is_taken(chunks: list[bytes], events: list[SSEEvent]) -> None:
    """A line of exactly ``max_line_bytes`` bytes is a line like any other."""
    decoder = SSEDecoder(LIMIT)
    out: list[SSEEvent] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    out += decoder.close()
    assert out == events


OVER = b"data: " + b"x" * (LIMIT - 5)  # one byte past the limit


@pytest.mark.parametrize(
    ("chunks", "before"),
    [
        ([OVER + b"\n\n"], []),
        ([OVER], []),
        ([OVER[:10], OVER[10:]], []),
        ([*(OVER[i : i + 1] for i in range(len(OVER)))], []),
        ([OVER[:40], OVER[40:] + b"\n"], []),
        ([b"data: a\n\n" + OVER], [SSEEvent("a")]),
        ([b"data: a\n\ndata: b\n\n", OVER[:30], OVER[30:] + b"\r"], []),
        ([b"data: " + b"y" * 40 + b"\n" + b"data: " + b"z" * 40 + b"\n\n"], []),
    ],
    ids=[
        "whole-line",
        "no-line-end",
        "two-pieces",
        "byte-by-byte",
        "completed-after-keeping",
        "events-before-it",
        "after-other-reads",
        "event-data-over-the-limit",
    ],
)
def test_past_the_limit_feed_raises_with_the_events_before(
    chunks: list[bytes], before: list[SSEEvent]
) -> None:
    """A line (or one event's data) past the limit raises bad_chunk; earlier events come with it."""
    decoder = SSEDecoder(LIMIT)
    for chunk in chunks[:-1]:
        decoder.feed(chunk)
    with pytest.raises(LineTooLong) as caught:
        decoder.feed(chunks[-1])
    assert caught.value.code == "bad_chunk"
    assert caught.value.limit == LIMIT
    assert (
        caught.value.message == f"the upstream sent a line longer than the limit of {LIMIT} bytes"
    )
    assert caught.value.events == before


def test_close_raises_when_the_last_line_takes_the_data_past_the_limit() -> None:
    """The unterminated last line counts towards its event's data at close()."""
    decoder = SSEDecoder(LIMIT)
    assert decoder.feed(b"data: " + b"y" * 40 + b"\ndata: " + b"z" * 40) == []
    with pytest.raises(LineTooLong) as caught:
        decoder.close()
    assert caught.value.events == []


def test_the_event_data_count_starts_again_after_each_event() -> None:
    """Many events under the limit each are fine, however much they add up to."""
    decoder = SSEDecoder(LIMIT)
    chunk = b"data: " + b"x" * 50 + b"\n\n"
    assert decoder.feed(chunk * 100) == [SSEEvent("x" * 50)] * 100


def test_zero_means_unlimited() -> None:
    """``max_line_bytes = 0`` takes a line of any length."""
    decoder = SSEDecoder(0)
    assert decoder.feed(b"data: " + b"x" * 1_000_000 + b"\n\n") == [SSEEvent("x" * 1_000_000)]
