"""Provider quirks end to end: upstream chunks in; a viewer's rebuilt turn and the snapshot out.

Every case streams through the real SDK path, split at awkward bytes, and is checked twice:
as a WebSocket viewer rebuilds it from deltas, and as ``GET /api/rooms/{room}`` reports it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from .conftest import API_KEY, ServerFactory, viewer
from .fake_upstream import ANSWER, Chunk, FakeUpstream, Script, chunk, text_stream, usage_chunk
from .viewer import Viewer

FULL = "".join(ANSWER)
DONE = "data: [DONE]\n\n"
ROOM = "quirks"
# Seconds the fake upstream sleeps between chunks (each cut at awkward bytes and written
# piece by piece). 0 still yields to the loop between pieces; a few cases keep real gaps.
GAP = 0.0
REAL_GAP = 0.004


def ck(delta: dict[str, Any], *, index: int = 0, finish: str | None = None) -> dict[str, Any]:
    """A chunk whose one choice carries exactly ``delta`` (explicit nulls included)."""
    out = chunk(index=index, finish=finish)
    out["choices"][0]["delta"] = delta
    return out


def role(index: int = 0) -> dict[str, Any]:
    """The opening chunk: role only, empty content."""
    return ck({"role": "assistant", "content": ""}, index=index)


def pieces(texts: list[str], **extra: Any) -> list[Chunk]:
    """One content chunk per piece."""
    return [chunk(t, **extra) for t in texts]


def expect_choice(
    content: str = "",
    *,
    reasoning: str = "",
    refusal: str = "",
    tool_calls: list[dict[str, Any]] | None = None,
    finish: str | None = "stop",
) -> dict[str, Any]:
    """One expected choice, in the snapshot's TURN shape."""
    return {
        "content": content,
        "reasoning": reasoning,
        "refusal": refusal,
        "tool_calls": tool_calls or [],
        "finish_reason": finish,
    }


USAGE = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}


@dataclass
class Case:
    """One quirk: what the upstream sends and what every client must end up with."""

    script: Script
    status: str
    choices: dict[int, dict[str, Any]]
    usage: dict[str, Any] | None = None
    error_code: str | None = None
    deltas: int | None = None  # exact number of (unmerged) deltas, when the case pins it
    server: dict[str, Any] = field(default_factory=dict)
    max_seconds: float = 5.0


# --- the quirks -------------------------------------------------------------------------

GROQ_USAGE = {
    "queue_time": 0.012,
    "prompt_tokens": 18,
    "prompt_time": 0.0021,
    "completion_tokens": 11,
    "completion_time": 0.009,
    "total_tokens": 29,
    "total_time": 0.0111,
}


def groq_stream() -> list[Chunk]:
    """Groq: ``x_groq`` on the first chunk (an id) and the last (the usage)."""
    first = role()
    first["x_groq"] = {"id": "req_01abc"}
    last = chunk(finish="stop")
    last["x_groq"] = {"id": "req_01abc", "usage": GROQ_USAGE}
    return [first, *pieces(ANSWER), last, DONE]


AZURE_SAFE = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}


def azure_stream() -> list[Chunk]:
    """Azure OpenAI: a prompt-filter chunk first, filter results per choice, annotations last."""
    prompt_filter: dict[str, Any] = {
        "id": "",
        "object": "",
        "created": 0,
        "model": "",
        "choices": [],
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    }
    body: list[Chunk] = [prompt_filter, role()]
    for text in ANSWER:
        c = chunk(text)
        c["choices"][0]["content_filter_results"] = AZURE_SAFE
        body.append(c)
    body.append(chunk(finish="stop"))
    annotation_no_delta = {
        "id": "",
        "object": "",
        "created": 0,
        "model": "",
        "choices": [
            {
                "index": 0,
                "finish_reason": None,
                "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 40},
                "content_filter_results": AZURE_SAFE,
            }
        ],
    }
    annotation_empty_delta = json.loads(json.dumps(annotation_no_delta))
    annotation_empty_delta["choices"][0]["delta"] = {}
    annotation_empty_delta["choices"][0]["content_filter_results"] = {}
    body += [annotation_no_delta, annotation_empty_delta, usage_chunk(), DONE]
    return body


def with_comments(stream: list[Chunk]) -> list[Chunk]:
    """SSE comment lines (keep-alives, OpenRouter's processing notice) between every chunk."""
    comments = [": keep-alive\n\n", ": OPENROUTER PROCESSING\n\n"]
    out: list[Chunk] = []
    for i, item in enumerate(stream):
        out += [comments[i % 2], item]
    return out


THOUGHT = ["Let me ", "think: ", "größer ", "als 🚀."]


def deepseek_stream() -> list[Chunk]:
    """DeepSeek: ``reasoning_content`` with null content, then content with null reasoning."""
    return [
        ck({"role": "assistant", "content": None, "reasoning_content": ""}),
        *(ck({"content": None, "reasoning_content": t}) for t in THOUGHT),
        *(ck({"content": t, "reasoning_content": None}) for t in ANSWER),
        ck({"content": "", "reasoning_content": None}, finish="stop"),
        usage_chunk(),
        DONE,
    ]


def openrouter_reasoning_stream() -> list[Chunk]:
    """OpenRouter: ``reasoning`` (with ``reasoning_details`` alongside), then content."""
    thoughts = [
        ck(
            {
                "role": "assistant",
                "content": "",
                "reasoning": t,
                "reasoning_details": [{"type": "reasoning.text", "text": t, "index": 0}],
            }
        )
        for t in THOUGHT
    ]
    return [*thoughts, *pieces(ANSWER), chunk(finish="stop"), usage_chunk(), DONE]


REFUSAL = ["I'm sorry, ", "but I can’t ", "help with that."]


def refusal_stream() -> list[Chunk]:
    """A refusal: null content, refusal pieces."""
    return [
        ck({"role": "assistant", "content": None, "refusal": ""}),
        *(ck({"refusal": t}) for t in REFUSAL),
        chunk(finish="stop"),
        DONE,
    ]


WEATHER_ARGS = ['{"ci', 'ty": "Zü', 'rich"', "}"]
TIME_ARGS = ['{"tz": ', '"CET"}']
EXPECTED_CALLS = [
    {"index": 0, "id": "call_1", "name": "get_weather", "arguments": '{"city": "Zürich"}'},
    {"index": 1, "id": "call_2", "name": "get_time", "arguments": '{"tz": "CET"}'},
]


def tool_call(
    index: int | None, call_id: str | None, name: str | None, args: str
) -> dict[str, Any]:
    """One tool-call fragment; None leaves the key out."""
    out: dict[str, Any] = {"function": {"arguments": args}}
    if index is not None:
        out["index"] = index
    if call_id is not None:
        out["id"] = call_id
        out["type"] = "function"
    if name is not None:
        out["function"]["name"] = name
    return out


def tool_stream(*, repeat_ids: bool = False, with_index: bool = True) -> list[Chunk]:
    """Two parallel tool calls: id and name first, then argument fragments."""
    out: list[Chunk] = [ck({"role": "assistant", "content": None})]
    for index, call_id, name, args in (
        (0, "call_1", "get_weather", WEATHER_ARGS),
        (1, "call_2", "get_time", TIME_ARGS),
    ):
        idx = index if with_index else None
        out.append(ck({"tool_calls": [tool_call(idx, call_id, name, "")]}))
        for frag in args:
            if repeat_ids:
                out.append(ck({"tool_calls": [tool_call(idx, call_id, name, frag)]}))
            else:
                out.append(ck({"tool_calls": [tool_call(idx, None, None, frag)]}))
    out += [chunk(finish="tool_calls"), usage_chunk(), DONE]
    return out


POEM_0 = ["Roses", " are", " red,", " vïolets"]
POEM_1 = ["Sugar", " is", " swéet", " and"]


def two_choices_stream() -> list[Chunk]:
    """n=2: the choices interleave chunk by chunk and finish differently."""
    out: list[Chunk] = [role(0), role(1)]
    for a, b in zip(POEM_0, POEM_1, strict=True):
        out += [chunk(a, index=0), chunk(b, index=1)]
    out += [chunk(index=1, finish="length"), chunk(index=0, finish="stop"), usage_chunk(), DONE]
    return out


HEAD = ["Partial", " ansŵer"]

CASES = [
    pytest.param(
        Case(
            Script(gap=REAL_GAP, chunks=text_stream(ANSWER, usage=False)),
            "completed",
            {0: expect_choice(FULL)},
            deltas=len(ANSWER),
        ),
        id="plain-content",
    ),
    pytest.param(
        Case(
            Script(gap=GAP, chunks=text_stream(ANSWER)),
            "completed",
            {0: expect_choice(FULL)},
            usage=USAGE,
            deltas=len(ANSWER),
        ),
        id="usage-chunk-empty-choices",
    ),
    pytest.param(
        Case(
            Script(gap=GAP, chunks=groq_stream()),
            "completed",
            {0: expect_choice(FULL)},
            usage=GROQ_USAGE,
        ),
        id="groq-x_groq-usage",
    ),
    pytest.param(
        Case(
            Script(gap=GAP, chunks=azure_stream()),
            "completed",
            {0: expect_choice(FULL)},
            usage=USAGE,
            deltas=len(ANSWER),
        ),
        id="azure-filter-chunks",
    ),
    pytest.param(
        Case(
            Script(gap=REAL_GAP, chunks=with_comments(text_stream(ANSWER))),
            "completed",
            {0: expect_choice(FULL)},
            usage=USAGE,
            deltas=len(ANSWER),
        ),
        id="sse-comment-lines",
    ),
    pytest.param(
        Case(
            Script(gap=GAP, chunks=deepseek_stream()),
            "completed",
            {0: expect_choice(FULL, reasoning="".join(THOUGHT))},
            usage=USAGE,
            deltas=len(THOUGHT) + len(ANSWER),
        ),
        id="deepseek-reasoning_content",
    ),
    pytest.param(
        Case(
            Script(gap=GAP, chunks=openrouter_reasoning_stream()),
            "completed",
            {0: expect_choice(FULL, reasoning="".join(THOUGHT))},
            usage=USAGE,
            deltas=len(THOUGHT) + len(ANSWER),
        ),
        id="openrouter-reasoning",
    ),
    pytest.param(
        Case(
            Script(gap=GAP, chunks=refusal_stream()),
            "completed",
            {0: expect_choice(refusal="".join(REFUSAL))},
            deltas=len(REFUSAL),
        ),
        id="refusal",
    ),
    pytest.param(
        Case(
            Script(gap=GAP, chunks=tool_stream()),
            "completed",
            {0: expect_choice(tool_calls=EXPECTED_CALLS, finish="tool_calls")},
            usage=USAGE,
            deltas=2 + len(WEATHER_ARGS) + len(TIME_ARGS),
        ),
        id="tool-calls-id-name-first",
    ),
    pytest.param(
        Case(
            Script(gap=GAP, chunks=tool_stream(repeat_ids=True)),
            "completed",
            {0: expect_choice(tool_calls=EXPECTED_CALLS, finish="tool_calls")},
            usage=USAGE,
            deltas=2 + len(WEATHER_ARGS) + len(TIME_ARGS),
        ),
        id="tool-calls-repeated-id-and-name",
    ),
    pytest.param(
        Case(
            Script(gap=GAP, chunks=tool_stream(with_index=False)),
            "completed",
            {0: expect_choice(tool_calls=EXPECTED_CALLS, finish="tool_calls")},
            usage=USAGE,
        ),
        id="tool-calls-without-index",
    ),
    pytest.param(
        Case(
            Script(gap=GAP, chunks=tool_stream(repeat_ids=True, with_index=False)),
            "completed",
            {0: expect_choice(tool_calls=EXPECTED_CALLS, finish="tool_calls")},
            usage=USAGE,
        ),
        id="tool-calls-without-index-repeated-id",
    ),
    pytest.param(
        Case(
            Script(gap=GAP, chunks=two_choices_stream()),
            "completed",
            {
                0: expect_choice("".join(POEM_0), finish="stop"),
                1: expect_choice("".join(POEM_1), finish="length"),
            },
            usage=USAGE,
            deltas=len(POEM_0) + len(POEM_1),
        ),
        id="n2-interleaved",
    ),
    *(
        pytest.param(
            Case(
                Script(gap=GAP, chunks=text_stream(ANSWER, finish=reason)),
                "completed",
                {0: expect_choice(FULL, finish=reason)},
                usage=USAGE,
            ),
            id=f"finish-{reason}",
        )
        for reason in ("stop", "length", "tool_calls", "content_filter")
    ),
    pytest.param(
        Case(
            Script(
                gap=GAP,
                chunks=[
                    role(),
                    *pieces(ANSWER),
                    chunk(finish="stop"),
                    ck({}),
                    chunk(""),
                    ck({"content": None}),
                    usage_chunk(),
                    DONE,
                ],
            ),
            "completed",
            {0: expect_choice(FULL, finish="stop")},
            usage=USAGE,
            deltas=len(ANSWER),
        ),
        id="late-null-finish-keeps-finish",
    ),
    pytest.param(
        Case(
            Script(
                gap=GAP,
                chunks=[
                    role(),
                    *pieces(HEAD),
                    {
                        "error": {
                            "message": "boom sk-leakedkey123456789",
                            "type": "server_error",
                            "code": "server_error",
                        }
                    },
                    chunk(" MORE"),
                    chunk(finish="stop"),
                    DONE,
                ],
            ),
            "failed",
            {0: expect_choice("".join(HEAD), finish=None)},
            error_code="server_error",
            deltas=len(HEAD),
        ),
        id="in-stream-error-object",
    ),
    pytest.param(
        Case(
            Script(gap=GAP, chunks=[role(), *pieces(HEAD)]),
            "truncated",
            {0: expect_choice("".join(HEAD), finish=None)},
        ),
        id="ends-without-finish-or-done",
    ),
    pytest.param(
        Case(
            Script(gap=REAL_GAP, chunks=[role(), *pieces(HEAD)], reset=True),
            "truncated",
            {0: expect_choice("".join(HEAD), finish=None)},
        ),
        id="connection-reset-mid-stream",
    ),
    pytest.param(
        Case(
            Script(gap=REAL_GAP, chunks=[role(), *pieces(HEAD)], hang=True),
            "truncated",
            {0: expect_choice("".join(HEAD), finish=None)},
            server={"upstream__idle_timeout": 0.5},
            max_seconds=2.5,
        ),
        id="upstream-goes-silent",
    ),
    pytest.param(
        Case(
            Script(gap=GAP, chunks=[role(), *pieces(ANSWER), chunk(finish="stop"), usage_chunk()]),
            "completed",
            {0: expect_choice(FULL)},
            usage=USAGE,
        ),
        id="finish-without-done",
    ),
    pytest.param(
        Case(
            Script(
                gap=GAP,
                chunks=[
                    role(),
                    *pieces(HEAD),
                    "data: {not json at all\n\n",
                    chunk(" MORE"),
                    chunk(finish="stop"),
                    DONE,
                ],
            ),
            "failed",
            {0: expect_choice("".join(HEAD), finish=None)},
            error_code="bad_chunk",
            deltas=len(HEAD),
        ),
        id="non-json-data-line",
    ),
]


# --- checks -----------------------------------------------------------------------------


def check_delta_frames(v: Viewer, turn_id: str, case: Case) -> None:
    """Deltas only carry what grew; tool-call ids and names travel exactly once."""
    deltas = [f for f in v.frames if f["type"] == "delta" and f["turn"] == turn_id]
    for frame in deltas:
        assert frame["choices"], frame
        for c in frame["choices"]:
            grew = [k for k in ("content", "reasoning", "refusal") if k in c]
            assert all(c[k] for k in grew), frame
            for tc in c.get("tool_calls", []):
                assert set(tc) - {"index"}, frame
                assert all(tc[k] for k in ("id", "name", "arguments") if k in tc), frame
            assert grew or c.get("tool_calls"), frame
    if case.deltas is not None:
        span = sum(f["seq"] - f.get("first_seq", f["seq"]) + 1 for f in deltas)
        assert span == case.deltas
    for index, expected in case.choices.items():
        for call in expected["tool_calls"]:
            entries = [
                tc
                for f in deltas
                for c in f["choices"]
                if c["index"] == index
                for tc in c.get("tool_calls", [])
                if tc["index"] == call["index"]
            ]
            assert sum("id" in tc for tc in entries) == 1, entries
            assert sum("name" in tc for tc in entries) == 1, entries
            json.loads(call["arguments"])


async def snapshot_turn(
    session: aiohttp.ClientSession, server: TestServer, turn_id: str
) -> dict[str, Any]:
    """The turn as ``GET /api/rooms/{room}`` reports it."""
    resp = await session.get(server.make_url(f"/api/rooms/{ROOM}"))
    assert resp.status == 200
    body = await resp.json()
    assert body["room"] == ROOM
    return next(t for t in body["turns"] if t["id"] == turn_id)


def tokens(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """The token counts of ``usage`` (providers may add timing fields beside them)."""
    if usage is None:
        return None
    return {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


@pytest.mark.parametrize("case", CASES)
async def test_quirk(
    case: Case,
    make_server: ServerFactory,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
) -> None:
    """The upstream's chunks become the same turn for a viewer and for the HTTP snapshot."""
    server = await make_server(**case.server)
    upstream.always(case.script)
    v = await viewer(session, server, ROOM)
    started = time.monotonic()
    await v.send({"type": "prompt", "content": "Go", "id": "p-quirk"})
    turn = await v.wait_turn_end()
    elapsed = time.monotonic() - started
    start = next(f for f in v.frames if f["type"] == "turn.start")
    turn_id = start["turn"]
    end = turn.end
    assert end is not None
    # The viewer's rebuilt turn and its turn.end.
    assert turn.status == end["status"] == case.status
    assert turn.choices() == [
        {"index": i, **{k: x for k, x in c.items() if k != "finish_reason"}}
        for i, c in sorted(case.choices.items())
    ]
    assert end["choices"] == [
        {"index": i, "finish_reason": c["finish_reason"]} for i, c in sorted(case.choices.items())
    ]
    assert tokens(end["usage"]) == tokens(case.usage)
    if case.error_code is None:
        assert end["error"] is None
    else:
        assert end["error"]["code"] == case.error_code
        assert end["error"]["message"]
        assert "sk-" not in end["error"]["message"]
        assert API_KEY not in json.dumps(end)
    check_delta_frames(v, turn_id, case)
    assert v.problems == []
    assert v.errors == []
    assert elapsed < case.max_seconds
    # The HTTP snapshot says the same.
    snap = await snapshot_turn(session, server, turn_id)
    assert snap["status"] == case.status
    assert snap["prompt"] == "Go"
    assert snap["ended_at"] is not None
    assert [c["index"] for c in snap["choices"]] == sorted(case.choices)
    for c in snap["choices"]:
        assert {k: c[k] for k in c if k != "index"} == case.choices[c["index"]]
    assert tokens(snap["usage"]) == tokens(case.usage)
    assert snap["error"] == end["error"]
    assert len(upstream.requests) == 1
    await v.close()


# --- the request the upstream gets --------------------------------------------------------


async def test_request_asks_for_a_stream_with_usage_the_model_and_the_key(
    server: TestServer, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """The upstream request streams, asks for usage, names the model and carries the API key."""
    upstream.always(Script(gap=GAP))
    v = await viewer(session, server, "req")
    await v.send({"type": "prompt", "content": "hi"})
    await v.wait_turn_end()
    await v.send({"type": "prompt", "content": "again", "model": "other-model"})
    await v.wait(lambda x: len(x.turns) == 2 and all(t.end for t in x.turns.values()))
    first, second = upstream.requests
    assert first["stream"] is True
    assert first["stream_options"] == {"include_usage": True}
    assert first["model"] == "gpt-4o-mini"
    assert first["_headers"]["authorization"] == f"Bearer {API_KEY}"
    assert second["model"] == "other-model"
    assert [f["model"] for f in v.frames if f["type"] == "turn.start"] == [
        "gpt-4o-mini",
        "other-model",
    ]
    await v.close()


async def test_no_stream_options_when_include_usage_is_off(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """With ``upstream.include_usage = false`` the request carries no ``stream_options``."""
    server = await make_server(upstream__include_usage=False)
    upstream.always(Script(gap=GAP))
    v = await viewer(session, server, "nousage")
    await v.send({"type": "prompt", "content": "hi"})
    assert (await v.wait_turn_end()).status == "completed"
    assert len(upstream.requests) == 1
    assert upstream.requests[0]["stream"] is True
    assert "stream_options" not in upstream.requests[0]
    await v.close()


async def test_second_prompt_sends_the_room_history(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """A room's second prompt goes upstream as system prompt, user 1, answer 1, user 2."""
    server = await make_server(upstream__system_prompt="Be brief.")
    upstream.always(Script(gap=GAP))
    v = await viewer(session, server, "history")
    await v.send({"type": "prompt", "content": "First question"})
    await v.wait_turn_end()
    await v.send({"type": "prompt", "content": "Second question"})
    await v.wait(lambda x: len(x.turns) == 2 and all(t.end for t in x.turns.values()))
    assert len(upstream.requests) == 2
    assert upstream.requests[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "First question"},
    ]
    assert upstream.requests[1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": FULL},
        {"role": "user", "content": "Second question"},
    ]
    await v.close()
