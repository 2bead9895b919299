"""ChunkAccumulator: a table of provider quirks -> the deltas and the final choice views."""

from __future__ import annotations

from typing import Any

import pytest

from server.core.accumulator import ChunkAccumulator, error_info
from server.core.messages import ChoiceDelta, ChoiceView, ErrorInfo, ToolCallDelta, ToolCallView

CD = ChoiceDelta
TC = ToolCallDelta


def chunk(*choices: Any, **extra: Any) -> dict[str, Any]:
    """An OpenAI ``chat.completion.chunk`` with these choices and top-level fields."""
    return {"id": "c1", "object": "chat.completion.chunk", "choices": list(choices), **extra}


def ch(index: object = 0, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    """A raw choice; ``index=None`` leaves the key out."""
    raw: dict[str, Any] = {"delta": delta, "finish_reason": finish}
    if index is not None:
        raw["index"] = index
    return raw


def view(
    index: int = 0,
    content: str = "",
    reasoning: str = "",
    refusal: str = "",
    tools: tuple[ToolCallView, ...] = (),
    finish: str | None = None,
) -> ChoiceView:
    """A ChoiceView with defaults for the fields a case does not care about."""
    return ChoiceView(index, content, reasoning, refusal, tools, finish)


def calls(*raw: Any) -> dict[str, Any]:
    """A choice-0 chunk whose delta carries these raw tool calls."""
    return chunk(ch(tool_calls=list(raw)))


AZURE_FILTER = {"hate": {"filtered": False, "severity": "safe"}}

# (chunks, what each feed returns, final views)
CASES: dict[str, tuple[list[Any], list[tuple[ChoiceDelta, ...]], tuple[ChoiceView, ...]]] = {
    "plain-content": (
        [
            chunk(ch(role="assistant", content="")),
            chunk(ch(content="Hel")),
            chunk(ch(content="lo")),
            chunk(ch(finish="stop")),
        ],
        [(), (CD(0, content="Hel"),), (CD(0, content="lo"),), ()],
        (view(content="Hello", finish="stop"),),
    ),
    "role-only-first-chunk": (
        [chunk(ch(role="assistant"))],
        [()],
        (view(),),
    ),
    "finish-only-chunk": (
        [chunk(ch(content="a")), chunk({"index": 0, "finish_reason": "length"})],
        [(CD(0, content="a"),), ()],
        (view(content="a", finish="length"),),
    ),
    "later-null-finish-keeps-earlier": (
        [chunk(ch(finish="stop")), chunk(ch(finish=None)), chunk(ch(finish=""))],
        [(), (), ()],
        (view(finish="stop"),),
    ),
    "usage-chunk-with-empty-choices": (
        [chunk(ch(content="x", finish="stop")), chunk(usage={"total_tokens": 3})],
        [(CD(0, content="x"),), ()],
        (view(content="x", finish="stop"),),
    ),
    "azure-filter-chunks": (
        [
            {
                "id": "",
                "object": "",
                "created": 0,
                "model": "",
                "choices": [],
                "prompt_filter_results": [
                    {"prompt_index": 0, "content_filter_results": AZURE_FILTER}
                ],
            },
            chunk(ch(role="assistant", content="")),
            chunk(ch(content="Hi")),
            chunk(ch(finish="stop")),
            {
                "id": "",
                "model": "",
                "choices": [
                    {
                        "index": 0,
                        "delta": {},
                        "content_filter_results": AZURE_FILTER,
                        "finish_reason": None,
                    }
                ],
            },
        ],
        [(), (), (CD(0, content="Hi"),), (), ()],
        (view(content="Hi", finish="stop"),),
    ),
    "reasoning-content": (
        [chunk(ch(reasoning_content="think")), chunk(ch(content="ok"))],
        [(CD(0, reasoning="think"),), (CD(0, content="ok"),)],
        (view(content="ok", reasoning="think"),),
    ),
    "reasoning": (
        [chunk(ch(reasoning="hm")), chunk(ch(reasoning="m", reasoning_content=None))],
        [(CD(0, reasoning="hm"),), (CD(0, reasoning="m"),)],
        (view(reasoning="hmm"),),
    ),
    "reasoning-both-equal-counted-once": (
        [chunk(ch(reasoning_content="x", reasoning="x"))],
        [(CD(0, reasoning="x"),)],
        (view(reasoning="x"),),
    ),
    "reasoning-both-different-concatenated": (
        [chunk(ch(reasoning_content="a", reasoning="b"))],
        [(CD(0, reasoning="ab"),)],
        (view(reasoning="ab"),),
    ),
    "refusal": (
        [chunk(ch(refusal="I can")), chunk(ch(refusal="not", content=None))],
        [(CD(0, refusal="I can"),), (CD(0, refusal="not"),)],
        (view(refusal="I cannot"),),
    ),
    "all-strings-in-one-delta": (
        [chunk(ch(content="c", refusal="r", reasoning="t"))],
        [(CD(0, content="c", reasoning="t", refusal="r"),)],
        (view(content="c", reasoning="t", refusal="r"),),
    ),
    "tool-call-id-name-then-arguments": (
        [
            calls(
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ),
            calls({"index": 0, "function": {"arguments": '{"city":'}}),
            calls({"index": 0, "function": {"arguments": '"Paris"}'}}),
            chunk(ch(finish="tool_calls")),
        ],
        [
            (CD(0, tool_calls=(TC(0, "call_1", "get_weather"),)),),
            (CD(0, tool_calls=(TC(0, arguments='{"city":'),)),),
            (CD(0, tool_calls=(TC(0, arguments='"Paris"}'),)),),
            (),
        ],
        (
            view(
                tools=(ToolCallView(0, "call_1", "get_weather", '{"city":"Paris"}'),),
                finish="tool_calls",
            ),
        ),
    ),
    "tool-call-id-and-name-repeated-every-chunk": (
        [
            calls({"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{"}}),
            calls({"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "}"}}),
            calls({"index": 0, "id": "call_1", "function": {"name": "f"}}),
        ],
        [
            (CD(0, tool_calls=(TC(0, "call_1", "f", "{"),)),),
            (CD(0, tool_calls=(TC(0, arguments="}"),)),),
            (),
        ],
        (view(tools=(ToolCallView(0, "call_1", "f", "{}"),)),),
    ),
    "tool-calls-without-index": (
        [
            calls({"id": "a", "function": {"name": "f", "arguments": "{"}}),
            calls({"id": "a", "function": {"arguments": "}"}}),
            calls({"id": "b", "function": {"name": "g"}}),
            calls({"function": {"arguments": "[]"}}),
            calls({"index": True, "function": {"arguments": "!"}}),
        ],
        [
            (CD(0, tool_calls=(TC(0, "a", "f", "{"),)),),
            (CD(0, tool_calls=(TC(0, arguments="}"),)),),
            (CD(0, tool_calls=(TC(1, "b", "g"),)),),
            (CD(0, tool_calls=(TC(1, arguments="[]"),)),),
            (CD(0, tool_calls=(TC(1, arguments="!"),)),),
        ],
        (view(tools=(ToolCallView(0, "a", "f", "{}"), ToolCallView(1, "b", "g", "[]!"))),),
    ),
    "tool-call-without-index-or-id-first": (
        [calls({"function": {"name": "f", "arguments": "x"}})],
        [(CD(0, tool_calls=(TC(0, None, "f", "x"),)),)],
        (view(tools=(ToolCallView(0, None, "f", "x"),)),),
    ),
    "two-parallel-tool-calls": (
        [
            calls(
                {"index": 0, "id": "a", "function": {"name": "f", "arguments": ""}},
                {"index": 1, "id": "b", "function": {"name": "g", "arguments": "1"}},
            ),
            calls({"index": 1, "function": {"arguments": "2"}}),
            calls({"index": 0, "function": {"arguments": "3"}}),
        ],
        [
            (CD(0, tool_calls=(TC(0, "a", "f"), TC(1, "b", "g", "1"))),),
            (CD(0, tool_calls=(TC(1, arguments="2"),)),),
            (CD(0, tool_calls=(TC(0, arguments="3"),)),),
        ],
        (view(tools=(ToolCallView(0, "a", "f", "3"), ToolCallView(1, "b", "g", "12"))),),
    ),
    "legacy-function-call": (
        [
            chunk(ch(function_call={"name": "f", "arguments": ""})),
            chunk(ch(function_call={"arguments": "{}"})),
            chunk(ch(finish="function_call", tool_calls=None, function_call=None)),
        ],
        [
            (CD(0, tool_calls=(TC(0, None, "f"),)),),
            (CD(0, tool_calls=(TC(0, arguments="{}"),)),),
            (),
        ],
        (view(tools=(ToolCallView(0, None, "f", "{}"),), finish="function_call"),),
    ),
    "malformed-tool-call-parts-ignored": (
        [calls("junk", None, {"index": 0, "id": "c", "function": "not-an-object"})],
        [(CD(0, tool_calls=(TC(0, "c"),)),)],
        (view(tools=(ToolCallView(0, "c", None, ""),)),),
    ),
    "n2-interleaved": (
        [
            chunk(ch(1, content="B")),
            chunk(ch(0, content="A")),
            chunk(ch(0, content="a"), ch(1, content="b")),
            chunk(ch(1, finish="stop"), ch(0, finish="length")),
        ],
        [
            (CD(1, content="B"),),
            (CD(0, content="A"),),
            (CD(0, content="a"), CD(1, content="b")),
            (),
        ],
        (view(0, "Aa", finish="length"), view(1, "Bb", finish="stop")),
    ),
    "choice-without-index-uses-position": (
        [
            chunk(ch(None, content="x"), ch(None, content="y")),
            chunk(ch(-1, content="z"), ch("1", content="w")),
        ],
        [(CD(0, content="x"), CD(1, content="y")), (CD(0, content="z"), CD(1, content="w"))],
        (view(0, "xz"), view(1, "yw")),
    ),
    "non-dict-entries-ignored": (
        [
            chunk("junk", None, 3, ch(0, content="ok")),
            chunk({"index": 0, "delta": "text"}),
            {"choices": {"index": 0}},
            {"object": "chat.completion.chunk"},
        ],
        [(CD(0, content="ok"),), (), (), ()],
        (view(0, "ok"),),
    ),
}


@pytest.mark.parametrize(("chunks", "deltas", "views"), CASES.values(), ids=CASES.keys())
def test_provider_quirks(
    chunks: list[Any], deltas: list[tuple[ChoiceDelta, ...]], views: tuple[ChoiceView, ...]
) -> None:
    """Each provider's chunk sequence gives exactly these deltas and these final views."""
    acc = ChunkAccumulator()
    got = [acc.feed(c) for c in chunks]
    assert got == deltas
    assert acc.views() == views
    assert acc.error is None


@pytest.mark.parametrize(
    ("chunks", "usage"),
    [
        ([{"choices": [], "usage": {"total_tokens": 3}}], {"total_tokens": 3}),
        (
            [{"choices": [ch(finish="stop")], "x_groq": {"id": "r", "usage": {"total_tokens": 5}}}],
            {"total_tokens": 5},
        ),
        ([{"choices": [], "x_groq": {"id": "r"}}], None),
        ([{"choices": [], "x_groq": "junk", "usage": "junk"}], None),
        (
            [{"choices": [], "usage": {"total_tokens": 1}}, {"choices": [], "usage": None}],
            {"total_tokens": 1},
        ),
        ([{"choices": [], "usage": {"a": 1}}, {"choices": [], "usage": {"a": 2}}], {"a": 2}),
    ],
    ids=["openai", "groq", "groq-no-usage", "junk", "later-null-keeps", "later-wins"],
)
def test_usage(chunks: list[dict[str, Any]], usage: dict[str, int] | None) -> None:
    """``usage`` and Groq's ``x_groq.usage`` are kept; null or junk never clears them."""
    acc = ChunkAccumulator()
    for c in chunks:
        assert acc.feed(c) == ()
    assert acc.usage == usage


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"code": "server_error", "message": "key sk-abcdefghijklmnop and hunter2secret"},
            ErrorInfo("server_error", "key [redacted] and [redacted]"),
        ),
        ({"type": "overloaded", "message": "busy"}, ErrorInfo("overloaded", "busy")),
        ({"code": 502, "message": "bad gateway"}, ErrorInfo("502", "bad gateway")),
        ({}, ErrorInfo("upstream_error", "the upstream reported an error")),
        ("it broke", ErrorInfo("upstream_error", "it broke")),
        ("", ErrorInfo("upstream_error", "the upstream reported an error")),
        ({"code": "x" * 100, "message": "m"}, ErrorInfo("x" * 64, "m")),
        ({"code": "hunter2secret", "message": "m"}, ErrorInfo("[redacted]", "m")),
    ],
    ids=["scrubbed", "type-as-code", "int-code", "empty", "string", "empty-string", "long", "code"],
)
def test_in_stream_error(raw: object, expected: ErrorInfo) -> None:
    """An ``error`` object in a chunk sets ``error`` (scrubbed, bounded) and makes no delta."""
    acc = ChunkAccumulator(secrets=("hunter2secret",))
    assert acc.feed({"error": raw, "choices": [ch(content="lost")]}) == ()
    assert acc.error == expected
    assert acc.views() == ()


def test_error_info_without_secrets_still_scrubs_key_shapes() -> None:
    """error_info() with no secrets still redacts credential-shaped strings."""
    assert error_info({"message": "Bearer abc.def"}) == ErrorInfo(
        "upstream_error", "Bearer [redacted]"
    )


def test_a_null_error_is_no_error() -> None:
    """``"error": null`` in a chunk is ignored."""
    acc = ChunkAccumulator()
    assert acc.feed({"error": None, "choices": [ch(content="a")]}) == (CD(0, content="a"),)
    assert acc.error is None


@pytest.mark.parametrize(
    ("chunks", "finished"),
    [
        ([], False),
        ([chunk(usage={"total_tokens": 1})], False),
        ([chunk(ch(0, content="a"))], False),
        ([chunk(ch(0, finish="stop"))], True),
        ([chunk(ch(0, finish="stop"), ch(1, content="b"))], False),
        ([chunk(ch(0, finish="stop"), ch(1, finish="length"))], True),
    ],
    ids=["nothing", "usage-only", "unfinished", "finished", "one-of-two", "both"],
)
def test_all_finished(chunks: list[dict[str, Any]], finished: bool) -> None:
    """all_finished() needs at least one choice and a finish_reason on every one."""
    acc = ChunkAccumulator()
    for c in chunks:
        acc.feed(c)
    assert acc.all_finished() is finished


def test_finish_reasons_and_content_by_index() -> None:
    """finish_reasons() lists choices in index order; content() of an unknown choice is ''."""
    acc = ChunkAccumulator()
    acc.feed(chunk(ch(2, content="c", finish="stop"), ch(0, content="a")))
    acc.feed(chunk(ch(0, content="b")))
    assert acc.finish_reasons() == ((0, None), (2, "stop"))
    assert acc.content(0) == "ab"
    assert acc.content() == "ab"
    assert acc.content(2) == "c"
    assert acc.content(1) == ""


def test_views_are_stable_across_reads() -> None:
    """Reading views twice (the lazy join) gives the same text, and more text appends."""
    acc = ChunkAccumulator()
    for piece in ["a", "b", "c"]:
        acc.feed(chunk(ch(content=piece)))
    assert acc.views()[0].content == "abc"
    assert acc.views()[0].content == "abc"
    acc.feed(chunk(ch(content="d")))
    assert acc.content() == "abcd"
