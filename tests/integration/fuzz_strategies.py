r"""Hypothesis strategies for hostile input: what a client or an upstream may send, byte for byte.

Values are built as a small JSON tree whose leaves may be raw tokens (``NaN``, ``1e999``, a
5,000-digit integer) that ``json.dumps`` would refuse to write, and whose strings may hold lone
surrogates. ``render`` writes such a tree as JSON text, either with ``\uXXXX`` escapes (valid
UTF-8 that decodes to a lone surrogate) or raw (bytes that are not UTF-8 at all).
"""

from __future__ import annotations

import itertools
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st


@dataclass(frozen=True)
class Raw:
    """A JSON token written verbatim: ``NaN``, ``Infinity``, ``1e999``, a huge integer."""

    token: str


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1E400"]
# Lone surrogates, NUL, BOM, line and paragraph separators, bidi overrides, astral characters.
NASTY = [
    "\ud800",
    "\udfff",
    "a\udc80b",
    "\udbff\udbff",
    "\x00",
    "\ufeff",
    "\u2028\u2029",
    "\u202e\u2066",
    "\U0001f680",
    "\ufffd",
    "e\u0301",
    "\r\n\r\n",
    "data: [DONE]\n\n",
    "</script>",
    "%ff",
]
UNICODE_DIGITS = ["²", "¹²³", "١٢٣", "𝟗", "٣", "৩", "Ⅻ", "½", "０"]


def has_surrogate(text: str) -> bool:
    """True if ``text`` holds a lone surrogate (it cannot be encoded as UTF-8)."""
    return any("\ud800" <= ch <= "\udfff" for ch in text)


hostile_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(NASTY),
    st.lists(
        st.one_of(
            st.characters(codec="utf-8"),
            st.characters(categories=["Cs"]),
            st.sampled_from(NASTY),
        ),
        max_size=8,
    ).map("".join),
)
huge_int = st.integers(4_301, 6_000).map(lambda n: Raw("9" * n))
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(NON_FINITE).map(Raw),
    huge_int,
)
leaves = st.one_of(st.none(), st.booleans(), numbers, hostile_text)
json_trees = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=10,
)


def render(value: Any, ascii_only: bool = True) -> str:
    """JSON text for a tree of plain values and ``Raw`` tokens."""
    if isinstance(value, Raw):
        return value.token
    if isinstance(value, dict):
        items = (f"{render(str(k), ascii_only)}:{render(v, ascii_only)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def to_bytes(text: str) -> bytes:
    """Text as UTF-8, with any lone surrogate written as the invalid bytes it would take."""
    return text.encode("utf-8", "surrogatepass")


def is_clean(value: Any) -> bool:
    """True if a tree holds no lone surrogate and no non-finite or over-long number."""
    if isinstance(value, Raw):
        return False
    if isinstance(value, str):
        return not has_surrogate(value)
    if isinstance(value, float):
        return value == value and abs(value) != float("inf")
    if isinstance(value, dict):
        return all(is_clean(k) and is_clean(v) for k, v in value.items())
    if isinstance(value, list):
        return all(is_clean(v) for v in value)
    return True


@dataclass(frozen=True)
class Body:
    """An HTTP request body and what the contract says about it."""

    data: bytes
    # "valid": must be accepted (202); "invalid": must be refused with 400 or 413;
    # "any": the contract only promises no 5xx and a healthy room.
    verdict: str


OPTION_KEYS = [
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "seed",
    "stop",
    "tools",
    "tool_choice",
    "response_format",
    "reasoning_effort",
    "bogus",
    "stream",
]
safe_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=20)
valid_prompts = st.fixed_dictionaries(
    {"content": safe_text.map(lambda s: "fuzz " + s)},
    optional={"id": safe_text.filter(bool)},
)
prompt_objects = st.fixed_dictionaries(
    {},
    optional={
        "content": hostile_text | json_trees,
        "id": hostile_text | json_trees,
        "model": hostile_text | json_trees,
        "options": st.dictionaries(st.sampled_from(OPTION_KEYS), json_trees, max_size=3)
        | json_trees,
        "type": hostile_text,
        "extra": json_trees,
    },
)
# Whole bodies whose bytes are wrong before any field is looked at.
broken_bytes = st.one_of(
    st.binary(max_size=40),
    st.just(b""),
    st.just(b'{"content": "caf\xe9"}'),
    st.just(b'{"content": "\xed\xa0\x80"}'),
    st.just(b'{"content": "\xff\xfe"}'),
    st.just(b'\xef\xbb\xbf{"content": "bom"}'),
    st.just(b'{"content": "trunc'),
    st.integers(2_000, 60_000).map(lambda d: b"[" * d + b"]" * d),
    st.integers(2_000, 60_000).map(lambda d: b'{"content":' + b"[" * d + b"]" * d + b"}"),
    huge_int.map(lambda r: b'{"content": "x", "n": ' + r.token.encode() + b"}"),
)


@st.composite
def prompt_bodies(draw: st.DrawFn) -> Body:
    """A body for ``POST /api/rooms/{room}/prompts``, tagged with the contract's verdict."""
    kind = draw(st.sampled_from(["valid", "object", "tree", "bytes"]))
    if kind == "valid":
        return Body(to_bytes(render(draw(valid_prompts), draw(st.booleans()))), "valid")
    if kind == "bytes":
        return Body(draw(broken_bytes), "any")
    value = draw(prompt_objects if kind == "object" else json_trees)
    ascii_only = draw(st.booleans())
    data = to_bytes(render(value, ascii_only))
    verdict = "any" if is_clean(value) else "invalid"
    return Body(data, verdict)


@st.composite
def split_points(draw: st.DrawFn, size: int) -> list[int]:
    """One to four cut positions inside ``size`` bytes (at least two pieces when it can)."""
    if size < 2:
        return []
    cuts = draw(st.lists(st.integers(1, size - 1), min_size=1, max_size=4, unique=True))
    return sorted(cuts)


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` split at ``cuts``."""
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


# Query and header values: unicode digits, 5,000-digit numbers, negatives, and bytes that are
# not UTF-8 once percent-decoded.
EPOCH = "{EPOCH}"  # replaced by the room's real epoch at run time


def _pct(text: str) -> str:
    return urllib.parse.quote(to_bytes(text), safe="")


resume_values = st.one_of(
    st.sampled_from(UNICODE_DIGITS).map(_pct),
    st.integers(4_301, 6_000).map(lambda n: "9" * n),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", "-0", "+1", "%201", "1%20", "0x10", "1e3", "1.5", "nan", "inf", "00001"]),
    st.sampled_from(["%FF", "%ED%A0%80", "%C0%AF", "%", "%G1", "%00", "%E2%82"]),
    hostile_text.map(_pct),
)
epoch_values = st.one_of(st.just(EPOCH), resume_values)


# aiohttp refuses a request line or a header line past 8,190 bytes in its parser, before any
# handler; such requests belong to ``malformed_requests``.
LINE_LIMIT = 8_190


@st.composite
def resume_queries(draw: st.DrawFn) -> str:
    """A query string (without ``?``) mixing ``epoch``, ``since`` and ``last_event_id``."""
    parts: list[str] = []
    if draw(st.booleans()):
        parts.append("epoch=" + draw(epoch_values))
    if draw(st.booleans()):
        parts.append("since=" + draw(resume_values))
    if draw(st.booleans()):
        epoch = draw(epoch_values)
        parts.append("last_event_id=" + draw(st.sampled_from([epoch, epoch + "%3A"])))
        parts[-1] += draw(resume_values)
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from(["since", "epoch=", "&&", "=", "since=1&since=2"])))
    query = "&".join(parts)
    return query if len(query) < LINE_LIMIT - 200 else query[: LINE_LIMIT - 200]


CONTROL = frozenset(range(0x20)) - {0x09} | {0x7F}


def _field_value(data: bytes) -> bytes:
    """``data`` without the control bytes HTTP forbids in a field value (RFC 9110, 5.5)."""
    return bytes(b for b in data if b not in CONTROL)


# Header values an HTTP parser lets through: any bytes but controls, so not always UTF-8.
header_bytes = st.one_of(
    st.binary(max_size=30).map(_field_value),
    hostile_text.map(lambda t: _field_value(to_bytes(t))),
    st.sampled_from(UNICODE_DIGITS).map(lambda t: t.encode()),
    st.integers(4_301, 6_000).map(lambda n: b"9" * n),
)


@st.composite
def malformed_requests(draw: st.DrawFn) -> bytes:
    """A request the HTTP parser itself refuses: controls in a field, raw bytes in the target.

    ``{ROOM}`` in it stands for the example's room.
    """
    kind = draw(st.sampled_from(["control", "target", "line", "long", "garbage"]))
    if kind == "long":
        digits = b"9" * draw(st.integers(LINE_LIMIT, 3 * LINE_LIMIT))
        if draw(st.booleans()):
            return b"GET /api/rooms/{ROOM}/events?since=" + digits + b" HTTP/1.1\r\n\r\n"
        return b"GET /api/rooms/{ROOM}/events HTTP/1.1\r\nLast-Event-ID: " + digits + b"\r\n\r\n"
    if kind == "control":
        name = draw(st.sampled_from([b"Last-Event-ID", b"Origin", b"X-Room", b"Accept"]))
        value = draw(st.binary(max_size=12)) + bytes([draw(st.sampled_from(sorted(CONTROL)))])
        value = value.replace(b"\r", b"").replace(b"\n", b"") or b"\x01"
        return (
            b"GET /api/rooms/{ROOM}/events HTTP/1.1\r\nHost: h\r\n"
            + name
            + b": "
            + value
            + b"\r\nConnection: close\r\n\r\n"
        )
    if kind == "target":
        raw = draw(
            st.sampled_from([t.encode() for t in UNICODE_DIGITS])
            | st.binary(min_size=1, max_size=8).map(lambda b: bytes(c | 0x80 for c in b))
        )
        path = draw(
            st.sampled_from([b"/api/rooms/{ROOM}/ws?since=", b"/api/rooms/{ROOM}/events?since="])
        )
        return b"GET " + path + raw + b" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    if kind == "line":
        return draw(
            st.sampled_from(
                [
                    b"GET /api/rooms/{ROOM}/events HTTP/1.1\r\nNo-Colon\r\n\r\n",
                    b"GET /api/rooms/{ROOM}/events HTTP/9.9\r\n\r\n",
                    b"POST /api/rooms/{ROOM}/prompts HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                    b"POST /api/rooms/{ROOM}/prompts HTTP/1.1\r\nTransfer-Encoding: chunked"
                    b"\r\n\r\nzz\r\n",
                ]
            )
        )
    return draw(st.binary(min_size=1, max_size=40)) + b"\r\n\r\n"


@st.composite
def last_event_ids(draw: st.DrawFn) -> bytes:
    """A ``Last-Event-ID`` value: ``epoch:seq`` with either side hostile, or any bytes."""
    if draw(st.booleans()):
        return draw(header_bytes)
    epoch = draw(st.one_of(st.just(EPOCH.encode()), header_bytes))
    return (epoch + b":" + draw(header_bytes))[: LINE_LIMIT - 200]


origins = st.one_of(
    st.none(),
    st.sampled_from(
        [b"null", b"http://127.0.0.1", b"http://evil.example", b"file://", b"http://[::1"]
    ),
    header_bytes,
)


@st.composite
def ws_frames(draw: st.DrawFn) -> tuple[str, bytes]:
    """One client WebSocket frame: ``("text", utf8)``, ``("raw-text", bytes)`` or binary."""
    kind = draw(st.sampled_from(["object", "object", "tree", "text", "binary", "raw-text"]))
    if kind == "binary":
        return "binary", draw(st.binary(max_size=40))
    if kind == "raw-text":
        body = draw(prompt_bodies())
        return "raw-text", body.data + draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc3"]))
    if kind == "text":
        return "text", draw(st.text(max_size=40)).encode()
    if kind == "tree":
        return "text", render(draw(json_trees)).encode()
    frame = draw(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["prompt", "cancel", "nope", ""]) | json_trees},
            optional={
                "content": hostile_text | json_trees,
                "id": hostile_text | json_trees,
                "model": hostile_text | json_trees,
                "turn": hostile_text | json_trees,
                "options": st.dictionaries(st.sampled_from(OPTION_KEYS), json_trees, max_size=3)
                | json_trees,
            },
        )
    )
    return "text", render(frame).encode()


# The tap: hostile chat-completions requests.
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "system", "assistant", "tool", "developer"])
        | hostile_text
        | json_trees,
    },
    optional={
        "content": hostile_text
        | json_trees
        | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": hostile_text})),
        "name": hostile_text,
        "tool_call_id": hostile_text,
    },
)
tap_requests = st.fixed_dictionaries(
    {"messages": st.lists(message, max_size=3) | json_trees},
    optional={
        "model": hostile_text | json_trees,
        "stream": st.booleans() | json_trees,
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans() | json_trees})
        | json_trees,
        "tools": st.lists(
            st.fixed_dictionaries(
                {
                    "type": st.just("function"),
                    "function": st.fixed_dictionaries(
                        {"name": hostile_text, "parameters": json_trees}
                    ),
                }
            ),
            max_size=2,
        )
        | json_trees,
        "temperature": numbers,
        "max_tokens": numbers,
        "n": st.integers(-1, 3) | numbers,
    },
)


@st.composite
def tap_bodies(draw: st.DrawFn) -> tuple[Body, bool]:
    """A tap body and whether it asked to stream (``"stream": true``)."""
    kind = draw(st.sampled_from(["request", "request", "request", "bytes"]))
    if kind == "bytes":
        return Body(draw(broken_bytes), "any"), False
    request = draw(tap_requests)
    data = to_bytes(render(request, draw(st.booleans())))
    verdict = "any" if is_clean(request) else "invalid"
    return Body(data, verdict), request.get("stream") is True


# The scripted upstream: OpenAI SSE streams with hostile content, split at any byte.
finish_reasons = st.one_of(
    st.none(),
    st.sampled_from(["stop", "length", "tool_calls", "content_filter"]),
    hostile_text,
    json_trees,
)


@st.composite
def upstream_chunks(draw: st.DrawFn) -> str:
    """One ``data:`` event (or a garbage line) of an upstream stream, as text."""
    kind = draw(
        st.sampled_from(
            ["content", "content", "tool", "finish", "usage", "error", "garbage", "tree"]
        )
    )
    if kind == "garbage":
        return draw(
            st.sampled_from(
                [
                    "data: {\n\n",
                    "data:\n\n",
                    ": keep-alive\n\n",
                    "event: weird\ndata: {}\n\n",
                    "data: null\n\n",
                    "data: []\n\n",
                    "data: 42\n\n",
                    'data: {"choices": null}\n\n',
                    'data: {"choices": [null]}\n\n',
                    'data: {"choices": [{"index": -1, "delta": {"content": "x"}}]}\n\n',
                    'data: {"choices": [{"index": 99999999, "delta": {"content": "x"}}]}\n\n',
                    "id: 1\nretry: x\n\n",
                    "\r\r\n\n",
                    "data: [DONE]\n\n",
                ]
            )
            | hostile_text.map(lambda t: "data: " + t + "\n\n")
        )
    choice: dict[str, Any] = {"index": draw(st.sampled_from([0, 0, 0, 1]) | numbers), "delta": {}}
    top: dict[str, Any] = {"id": "chatcmpl-fuzz", "object": "chat.completion.chunk"}
    if kind == "content":
        field = draw(st.sampled_from(["content", "reasoning_content", "reasoning", "refusal"]))
        choice["delta"][field] = draw(hostile_text | json_trees)
    elif kind == "tool":
        call: dict[str, Any] = {"index": draw(st.just(0) | numbers)}
        call["id"] = draw(hostile_text)
        call["function"] = {"name": draw(hostile_text), "arguments": draw(hostile_text)}
        choice["delta"]["tool_calls"] = [call]
    elif kind == "finish":
        choice["finish_reason"] = draw(finish_reasons)
    elif kind == "usage":
        usage = draw(
            st.dictionaries(
                st.sampled_from(["prompt_tokens", "completion_tokens", "total_tokens"])
                | hostile_text,
                numbers | json_trees,
                max_size=3,
            )
        )
        if draw(st.booleans()):
            top["usage"] = usage
        else:
            top["x_groq"] = {"usage": usage}
    elif kind == "error":
        top = {"error": {"message": draw(hostile_text), "code": draw(hostile_text | numbers)}}
        return "data: " + render(top, draw(st.booleans())) + "\n\n"
    else:
        return "data: " + render(draw(json_trees)) + "\n\n"
    top["choices"] = [choice]
    return "data: " + render(top, draw(st.booleans())) + "\n\n"


@dataclass(frozen=True)
class UpstreamScript:
    """One hostile upstream answer: status, body pieces (one write each), pause after each."""

    status: int
    content_type: str
    pieces: tuple[bytes, ...]
    pause: float


@st.composite
def upstream_scripts(draw: st.DrawFn) -> UpstreamScript:
    """A whole upstream answer: an SSE stream cut at random bytes, or an HTTP error."""
    status = draw(st.sampled_from([200, 200, 200, 200, 400, 401, 404, 429, 500, 503]))
    if status != 200:
        error = {"error": {"message": draw(hostile_text), "type": draw(hostile_text | numbers)}}
        body = to_bytes(render(draw(st.just(error) | json_trees), draw(st.booleans())))
        if draw(st.booleans()):
            body = draw(st.binary(max_size=40))
        return UpstreamScript(status, "application/json", (body,), 0.0)
    text = "".join(draw(st.lists(upstream_chunks(), min_size=1, max_size=8)))
    data = to_bytes(text)
    if draw(st.booleans()):
        data += draw(st.sampled_from([b"\xff\xfe\n\n", b"data: \xc3\n\n", b"data: {\xed\xa0\x80"]))
    if draw(st.booleans()):
        data += b"data: [DONE]\n\n"
    pieces = tuple(cut(data, draw(split_points(len(data)))))
    pause = draw(st.sampled_from([0.0, 0.0, 0.002]))
    return UpstreamScript(200, "text/event-stream", pieces, pause)
