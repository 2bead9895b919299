r"""An upstream cannot poison a room: what it sends is repaired or ends the turn; the room goes on.

Each case streams through the real SDK path from the fake upstream. Lone surrogates (the JSON
escape ``\ud800``) become U+FFFD wherever they are, non-finite usage numbers are dropped, and a
line past ``upstream.max_line_bytes`` fails the turn with ``bad_chunk``. For every case: viewers
get ``turn.start`` and ``turn.end``, the text rebuilt from the deltas is the snapshot's, nothing
is logged with a traceback, and the room then accepts a new viewer and completes a new prompt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from .conftest import ServerFactory, viewer
from .fake_upstream import Chunk, FakeUpstream, Script, chunk, usage_chunk
from .room_health import assert_room_healthy, room_turn, snapshot_text

ROOM = "hostile"
DONE = "data: [DONE]\n\n"
LONE = "\\ud800"  # the JSON escape of a lone surrogate, as the upstream writes it
FFFD = "\ufffd"
LIMIT = 4096
TIMEOUT = 10.0
REPAIR_LOG = "not valid text or numbers"


def spliced(obj: dict[str, Any], marks: dict[str, str]) -> str:
    """``obj`` as an SSE event whose JSON text has each mark replaced by raw JSON text."""
    text = json.dumps(obj)
    for mark, raw in marks.items():
        assert mark in text, mark
        text = text.replace(mark, raw)
    return f"data: {text}\n\n"


def lone(obj: dict[str, Any]) -> str:
    r"""``obj`` as an SSE event with every ``@LONE@`` written as the escape ``\ud800``."""
    return spliced(obj, {"@LONE@": LONE})


def delta(payload: dict[str, Any], *, finish: str | None = None) -> dict[str, Any]:
    """A chunk whose one choice carries exactly ``payload`` as its delta."""
    out = chunk(finish=finish)
    out["choices"][0]["delta"] = payload
    return out


def role() -> dict[str, Any]:
    """The opening chunk: role only."""
    return delta({"role": "assistant", "content": ""})


def usage_with(key: str, raw: str) -> str:
    """The usage chunk with ``usage[key]`` written as the raw JSON text ``raw``."""
    out = usage_chunk()
    out["usage"][key] = "@RAW@"
    return spliced(out, {'"@RAW@"': raw})


@dataclass
class Hostile:
    """What the upstream sends, and how the turn must end."""

    chunks: list[Chunk] = field(default_factory=list)
    status: str = "completed"
    content: str = "Hello"
    repairs: int = 1
    error_code: str | None = None
    error_has: str | None = None
    finish: str | None = "stop"
    usage: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    http_status: int = 200
    error_body: dict[str, Any] | None = None
    server: dict[str, Any] = field(default_factory=dict)
    split: bool = True


def answer(*middle: Chunk, finish: Chunk | None = None, usage: Chunk | None = None) -> list[Chunk]:
    """role, "Hello", ``middle``, a finish chunk, a usage chunk, [DONE]."""
    return [
        role(),
        chunk("Hello"),
        *middle,
        finish if finish is not None else chunk(finish="stop"),
        usage if usage is not None else usage_chunk(),
        DONE,
    ]


USAGE = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
JUNK = "x" * 65_536

CASES = [
    pytest.param(
        Hostile(
            answer(lone(chunk(" wo@LONE@rld")), lone(chunk(" and @LONE@@LONE@"))),
            content=f"Hello wo{FFFD}rld and {FFFD}{FFFD}",
            repairs=2,  # two strings, in two chunks: still one log line for the turn
            usage=USAGE,
        ),
        id="content",
    ),
    pytest.param(
        Hostile(
            answer(
                lone(chunk(reasoning_content="think @LONE@", refusal="no @LONE@")),
            ),
            repairs=2,
            usage=USAGE,
        ),
        id="reasoning-and-refusal",
    ),
    pytest.param(
        Hostile(
            answer(
                lone(
                    delta(
                        {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "call_@LONE@",
                                    "type": "function",
                                    "function": {"name": "get_@LONE@", "arguments": '{"city": '},
                                }
                            ]
                        }
                    )
                ),
                lone(delta({"tool_calls": [{"index": 0, "function": {"arguments": '"@LONE@"}'}}]})),
                finish=chunk(finish="tool_calls"),
            ),
            repairs=3,
            finish="tool_calls",
            usage=USAGE,
            tool_calls=[
                {
                    "index": 0,
                    "id": f"call_{FFFD}",
                    "name": f"get_{FFFD}",
                    "arguments": f'{{"city": "{FFFD}"}}',
                }
            ],
        ),
        id="tool-call-id-name-arguments",
    ),
    pytest.param(
        Hostile(
            answer(finish=lone(chunk(finish="st@LONE@op"))),
            finish=f"st{FFFD}op",
            usage=USAGE,
        ),
        id="finish-reason",
    ),
    pytest.param(
        Hostile(
            answer(usage=lone(usage_chunk() | {"usage": {"prompt_tokens@LONE@": 10}})),
            usage={f"prompt_tokens{FFFD}": 10},
        ),
        id="usage-key",
    ),
    pytest.param(
        Hostile(
            answer(
                lone({"x_groq": {"id": "req_@LONE@"}, "choices": [], "@LONE@": ["@LONE@"]}),
            ),
            repairs=3,
            usage=USAGE,
        ),
        id="provider-annotations",
    ),
    pytest.param(
        Hostile(
            [
                role(),
                chunk("Hello"),
                lone({"error": {"message": "boom @LONE@ here", "type": "x", "code": "c@LONE@"}}),
                chunk(" never"),
                DONE,
            ],
            status="failed",
            repairs=2,
            finish=None,
            error_code=f"c{FFFD}",
            error_has=f"boom {FFFD} here",
        ),
        id="in-stream-error-message",
    ),
    pytest.param(
        Hostile(
            status="failed",
            content="",
            finish=None,
            http_status=400,
            error_body={
                "error": {
                    "message": "bad \ud800 value",  # json_response writes the escape \ud800
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
            error_code="invalid_request_error",
            error_has=f"bad {FFFD} value",
        ),
        id="http-400-error-message",
    ),
    pytest.param(
        Hostile(
            answer(usage=usage_with("prompt_tokens", "1e999")),
            usage={"completion_tokens": 20, "total_tokens": 30},
        ),
        id="usage-1e999",
    ),
    pytest.param(
        Hostile(
            answer(
                usage=spliced(
                    usage_chunk() | {"usage": {"a": "@NAN@", "b": "@NINF@", "c": ["@INF@", 1]}},
                    {'"@NAN@"': "NaN", '"@NINF@"': "-Infinity", '"@INF@"': "Infinity"},
                )
            ),
            repairs=3,
            usage={"c": [1]},
        ),
        id="usage-nan-and-infinities",
    ),
    pytest.param(
        Hostile(
            [role(), chunk("Hello"), f"data: {JUNK}", *([JUNK] * 48)],
            status="failed",
            repairs=0,
            finish=None,
            error_code="bad_chunk",
            error_has=f"line longer than the limit of {LIMIT} bytes",
            server={"upstream__max_line_bytes": LIMIT},
            split=False,
        ),
        id="line-past-max-line-bytes",
    ),
]


def ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The log records of the servers under test: not the fake upstream's own.

    The fake upstream logs a traceback when the server under test hangs up on it mid-body,
    which is what the line-limit cases want to happen.
    """
    out = []
    for record in caplog.records:
        tb = record.exc_info[2] if record.exc_info else None
        frames = traceback.extract_tb(tb) if tb is not None else []
        if not any(f.filename.endswith("fake_upstream.py") for f in frames):
            out.append(record)
    return out


def metric(text: str, name: str) -> float:
    """One sample of the exposition text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


@pytest.mark.parametrize("case", CASES)
async def test_hostile_upstream_cannot_poison_the_room(
    case: Hostile,
    make_server: ServerFactory,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The turn ends as it should, deltas rebuild the snapshot, no traceback, the room goes on."""
    caplog.set_level(logging.INFO)
    server = await make_server(**case.server)
    upstream.always(
        Script(
            chunks=case.chunks,
            status=case.http_status,
            error_body=case.error_body,
            gap=0.0,
            split=case.split,
        )
    )
    async with asyncio.timeout(TIMEOUT):
        v = await viewer(session, server, ROOM)
        await v.send({"type": "prompt", "content": "Go", "id": "p-hostile"})
        turn = await v.wait_turn_end()
    start = next(f for f in v.frames if f["type"] == "turn.start")
    turn_id = start["turn"]
    end = turn.end
    assert end is not None
    assert end["turn"] == turn_id
    assert end["status"] == case.status
    # What the viewer rebuilt from the deltas is the snapshot's text, repaired.
    snap = await room_turn(session, server, ROOM, turn_id)
    assert snap["status"] == case.status
    assert v.turns[turn_id].choices() == snapshot_text(snap)
    assert turn.text() == case.content
    assert json.dumps(snap["choices"], ensure_ascii=False).encode()  # valid text throughout
    finishes = [c["finish_reason"] for c in end["choices"]]
    assert finishes == ([] if case.http_status != 200 else [case.finish])
    if case.tool_calls is not None:
        assert snap["choices"][0]["tool_calls"] == case.tool_calls
    assert end["usage"] == case.usage == snap["usage"]
    if case.error_code is None:
        assert end["error"] is None
    else:
        assert end["error"]["code"] == case.error_code
        assert case.error_has is not None
        assert case.error_has in end["error"]["message"]
        assert snap["error"] == end["error"]
    assert v.problems == []
    assert v.errors == []
    # Counted and logged once for the turn; nothing logged with a traceback.
    metrics = await (await session.get(server.make_url("/metrics"))).text()
    assert metric(metrics, "fanout_upstream_repairs_total") == case.repairs
    said = [r for r in caplog.records if REPAIR_LOG in r.getMessage()]
    assert len(said) == (1 if case.repairs else 0)
    assert all(r.levelno == logging.WARNING for r in said)
    await v.close()
    await assert_room_healthy(session, server, ROOM, upstream)
    assert [r.getMessage() for r in ours(caplog) if r.exc_info] == []
    assert [r.getMessage() for r in ours(caplog) if r.levelno >= logging.ERROR] == []


async def test_a_line_past_the_limit_closes_the_upstream_connection(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """The server stops reading a line past ``max_line_bytes``: it closes the connection."""
    server = await make_server(upstream__max_line_bytes=LIMIT)
    # 64 MiB that would take the server seconds to buffer and the fake long to write.
    upstream.always(
        Script(chunks=[role(), f"data: {JUNK}", *([JUNK] * 1024)], gap=0.0, split=False)
    )
    async with asyncio.timeout(TIMEOUT):
        v = await viewer(session, server, ROOM)
        await v.send({"type": "prompt", "content": "Go"})
        turn = await v.wait_turn_end()
        assert turn.status == "failed"
        await upstream.disconnected.wait()
    assert upstream.completed == 0
    await v.close()
    await assert_room_healthy(session, server, ROOM, upstream)
