"""The codec: exact wire bytes of every server message, and every bad client frame."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import pytest

from server.core.codec import (
    MAX_ID_CHARS,
    decode_client_frame,
    decode_position,
    dump_json,
    encode,
    load_json_object,
    parse_prompt,
    to_wire,
)
from server.core.errors import ClientError
from server.core.messages import (
    CancelRequest,
    ChoiceDelta,
    ChoiceEnd,
    ChoiceView,
    Delta,
    ErrorFrame,
    ErrorInfo,
    Presence,
    PromptRequest,
    ResponsePosition,
    ServerMessage,
    Snapshot,
    ToolCallDelta,
    ToolCallView,
    TurnEnd,
    TurnStart,
    TurnView,
    Welcome,
)

TURN = TurnView(
    id="t7",
    status="streaming",
    prompt="Tell me a joke",
    model="gpt-4o-mini",
    started_at=1763740000.12,
    ended_at=None,
    choices=(
        ChoiceView(
            index=0,
            content="Why did",
            reasoning="",
            refusal="",
            tool_calls=(ToolCallView(0, "call_1", "get_weather", '{"city":'),),
            finish_reason=None,
        ),
    ),
    usage=None,
    error=None,
)
TURN_WIRE = (
    '{"id":"t7","status":"streaming","prompt":"Tell me a joke","model":"gpt-4o-mini",'
    '"started_at":1763740000.12,"ended_at":null,'
    '"choices":[{"index":0,"content":"Why did","reasoning":"","refusal":"",'
    '"tool_calls":[{"index":0,"id":"call_1","name":"get_weather","arguments":"{\\"city\\":"}],'
    '"finish_reason":null}],'
    '"usage":null,"error":null}'
)
ENDED = TurnView(
    id="t6",
    status="failed",
    prompt="é",
    model="m",
    started_at=1.5,
    ended_at=2.0,
    choices=(),
    usage={"total_tokens": 3},
    error=ErrorInfo("rate_limit", "slow down"),
)
ENDED_WIRE = (
    '{"id":"t6","status":"failed","prompt":"é","model":"m","started_at":1.5,"ended_at":2.0,'
    '"choices":[],"usage":{"total_tokens":3},'
    '"error":{"code":"rate_limit","message":"slow down"}}'
)

ENCODED: dict[str, tuple[ServerMessage, str]] = {
    "welcome": (
        Welcome(room="demo", epoch="e1a9", seq=41, role="publisher", recovered=False, viewers=3),
        '{"type":"welcome","room":"demo","epoch":"e1a9","seq":41,"role":"publisher",'
        '"recovered":false,"viewers":3}',
    ),
    "snapshot": (
        Snapshot(room="demo", epoch="e1a9", seq=41, turns=(ENDED, TURN)),
        '{"type":"snapshot","room":"demo","epoch":"e1a9","seq":41,"turns":['
        + ENDED_WIRE
        + ","
        + TURN_WIRE
        + "]}",
    ),
    "turn.start": (
        TurnStart(
            seq=42, turn="t8", prompt="Tell me a joke", model="gpt-4o-mini", started_at=1763740001.5
        ),
        '{"type":"turn.start","seq":42,"turn":"t8","prompt":"Tell me a joke",'
        '"model":"gpt-4o-mini","started_at":1763740001.5}',
    ),
    "delta": (
        Delta(seq=43, turn="t8", choices=(ChoiceDelta(0, content="Why"),)),
        '{"type":"delta","seq":43,"turn":"t8","choices":[{"index":0,"content":"Why"}]}',
    ),
    "delta-first-seq-equal-to-seq-omitted": (
        Delta(seq=43, turn="t8", choices=(ChoiceDelta(0, content="Why"),), first_seq=43),
        '{"type":"delta","seq":43,"turn":"t8","choices":[{"index":0,"content":"Why"}]}',
    ),
    "delta-merged": (
        Delta(
            seq=51,
            turn="t8",
            choices=(ChoiceDelta(0, content=" did the"), ChoiceDelta(1, content="A man")),
            first_seq=44,
        ),
        '{"type":"delta","seq":51,"first_seq":44,"turn":"t8","choices":'
        '[{"index":0,"content":" did the"},{"index":1,"content":"A man"}]}',
    ),
    "delta-every-field": (
        Delta(
            seq=9,
            turn="t",
            choices=(
                ChoiceDelta(
                    0,
                    content="c",
                    reasoning="r",
                    refusal="n",
                    tool_calls=(
                        ToolCallDelta(0, id="call_1", name="f", arguments="{"),
                        ToolCallDelta(1, arguments="}"),
                        ToolCallDelta(2, name="g"),
                    ),
                ),
                ChoiceDelta(1, reasoning="🚀"),
            ),
        ),
        '{"type":"delta","seq":9,"turn":"t","choices":[{"index":0,"content":"c",'
        '"reasoning":"r","refusal":"n","tool_calls":[{"index":0,"id":"call_1","name":"f",'
        '"arguments":"{"},{"index":1,"arguments":"}"},{"index":2,"name":"g"}]},'
        '{"index":1,"reasoning":"🚀"}]}',
    ),
    "turn.end": (
        TurnEnd(
            seq=52,
            turn="t8",
            status="completed",
            choices=(ChoiceEnd(0, "stop"), ChoiceEnd(1, "length")),
            usage={"prompt_tokens": 24, "completion_tokens": 58, "total_tokens": 82},
            error=None,
        ),
        '{"type":"turn.end","seq":52,"turn":"t8","status":"completed",'
        '"choices":[{"index":0,"finish_reason":"stop"},{"index":1,"finish_reason":"length"}],'
        '"usage":{"prompt_tokens":24,"completion_tokens":58,"total_tokens":82},"error":null}',
    ),
    "turn.end-failed": (
        TurnEnd(
            seq=5,
            turn="t",
            status="failed",
            choices=(ChoiceEnd(0, None),),
            usage=None,
            error=ErrorInfo("bad_chunk", "nope"),
        ),
        '{"type":"turn.end","seq":5,"turn":"t","status":"failed",'
        '"choices":[{"index":0,"finish_reason":null}],"usage":null,'
        '"error":{"code":"bad_chunk","message":"nope"}}',
    ),
    "presence": (Presence(viewers=12), '{"type":"presence","viewers":12}'),
    "error": (
        ErrorFrame(
            code="turn_in_progress",
            message="a turn is already streaming",
            temporary=True,
            ref="p-17",
        ),
        '{"type":"error","code":"turn_in_progress","message":"a turn is already streaming",'
        '"temporary":true,"retry_after_ms":null,"ref":"p-17"}',
    ),
    "error-defaults": (
        ErrorFrame(code="rate_limited", message="m", retry_after_ms=1500),
        '{"type":"error","code":"rate_limited","message":"m","temporary":false,'
        '"retry_after_ms":1500,"ref":null}',
    ),
}


@pytest.mark.parametrize(("msg", "wire"), ENCODED.values(), ids=ENCODED.keys())
def test_encode_gives_exact_bytes(msg: ServerMessage, wire: str) -> None:
    """Every server message encodes to compact UTF-8 JSON with keys in protocol order."""
    assert encode(msg) == wire.encode()


def test_to_wire_is_the_object_encode_serialises() -> None:
    """to_wire() is the object that encode() serialises, its type first."""
    snap = Snapshot(room="r", epoch="e", seq=0, turns=())
    assert encode(snap) == json.dumps(to_wire(snap), separators=(",", ":")).encode()
    assert to_wire(snap) == {
        "type": "snapshot",
        "room": "r",
        "epoch": "e",
        "seq": 0,
        "turns": (),
    }


def test_dump_json_is_compact_utf8_and_never_writes_invalid_json() -> None:
    """dump_json writes raw UTF-8 without spaces; NaN and infinities become null."""
    assert dump_json({"a": ["é", 1]}) == '{"a":["é",1]}'.encode()
    assert dump_json({"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5]}) == (
        b'{"a":null,"b":[null,null,1.5]}'
    )


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("x\ud800y", '"x\ufffdy"'),
        ("\udc00\ud83d", '"\ufffd\ufffd"'),
        ("\U0001f600", '"\U0001f600"'),
        ({"k\ud800": ("v", 2)}, '{"k\ufffd":["v",2]}'),
        ({"k\ud800": [float("inf"), 1.5]}, '{"k\ufffd":[null,1.5]}'),
        (None, "null"),
    ],
)
def test_dump_json_writes_lone_surrogates_as_replacement_characters(
    value: object, wire: str
) -> None:
    """A lone surrogate that reached the encoder is written as U+FFFD, one per code point."""
    assert dump_json(value) == wire.encode()
    json.loads(dump_json(value))  # valid JSON, valid UTF-8


# --- decoding ---------------------------------------------------------------------------


def frame(**fields: Any) -> str:
    """A client frame as JSON text."""
    return json.dumps(fields)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (frame(type="prompt", content="hi"), PromptRequest(content="hi")),
        (
            frame(type="prompt", content="hi", id="p-17", model="m", extra=1),
            PromptRequest(content="hi", id="p-17", model="m"),
        ),
        (
            frame(type="prompt", content="hi", id=None, model=None, options=None),
            PromptRequest(content="hi"),
        ),
        (frame(type="cancel", turn="t8", id="c-3"), CancelRequest(turn="t8", id="c-3")),
        (frame(type="cancel", turn="t8"), CancelRequest(turn="t8")),
        (frame(type="prompt", content="x" * 10), PromptRequest(content="x" * 10)),
        (
            frame(type="prompt", content="hi", id="i" * MAX_ID_CHARS),
            PromptRequest(content="hi", id="i" * MAX_ID_CHARS),
        ),
    ],
    ids=[
        "minimal",
        "unknown-field-ignored",
        "nulls",
        "cancel",
        "cancel-no-id",
        "at-limit",
        "longest-id",
    ],
)
def test_decode_good_frames(text: str, expected: object) -> None:
    """Well-formed prompt and cancel frames decode to their request objects."""
    assert decode_client_frame(text, max_prompt_chars=10) == expected


def test_decoded_options_are_a_read_only_copy() -> None:
    """Options come back validated, equal to the input and not writable."""
    msg = decode_client_frame(
        frame(type="prompt", content="hi", options={"temperature": 0.2, "n": 2}),
        max_prompt_chars=0,
    )
    assert isinstance(msg, PromptRequest)
    assert msg.options == {"temperature": 0.2, "n": 2}
    with pytest.raises(TypeError):
        msg.options["n"] = 3  # type: ignore[index]


def test_zero_max_prompt_chars_is_unlimited() -> None:
    """max_prompt_chars=0 accepts a prompt of any length."""
    msg = decode_client_frame(frame(type="prompt", content="x" * 100_000), max_prompt_chars=0)
    assert isinstance(msg, PromptRequest)
    assert len(msg.content) == 100_000


BAD_FRAMES: dict[str, tuple[str, str, str | None, str]] = {
    # text, code, ref, a word of the message
    "not-json": ("{nope", "bad_request", None, "JSON"),
    "deeply-nested": ("[" * 100_000, "bad_request", None, "JSON"),
    "array": ("[1]", "bad_request", None, "object"),
    "string": ('"prompt"', "bad_request", None, "object"),
    "no-type": (frame(content="hi", id="r1"), "bad_request", "r1", "None"),
    "unknown-type": (frame(type="chat", id="r2"), "bad_request", "r2", "'chat'"),
    "type-not-string": (frame(type=1), "bad_request", None, "type"),
    "type-list": (frame(type=[]), "bad_request", None, "type"),
    "type-object": (frame(type={}), "bad_request", None, "type"),
    "content-missing": (frame(type="prompt", id="r3"), "bad_request", "r3", "content"),
    "content-number": (frame(type="prompt", content=1, id="r4"), "bad_request", "r4", "content"),
    "content-blank": (frame(type="prompt", content=" \n", id="r5"), "bad_request", "r5", "empty"),
    "content-too-long": (frame(type="prompt", content="x" * 11, id="r6"), "too_large", "r6", "10"),
    "id-number": (frame(type="prompt", content="hi", id=7), "bad_request", None, "'id'"),
    "id-empty": (frame(type="prompt", content="hi", id=""), "bad_request", None, "'id'"),
    "id-too-long": (
        frame(type="prompt", content="hi", id="i" * (MAX_ID_CHARS + 1)),
        "bad_request",
        None,
        "'id'",
    ),
    "model-number": (
        frame(type="prompt", content="hi", model=1, id="r7"),
        "bad_request",
        "r7",
        "'model'",
    ),
    "model-blank": (
        frame(type="prompt", content="hi", model=" ", id="r8"),
        "bad_request",
        "r8",
        "'model'",
    ),
    "options-list": (
        frame(type="prompt", content="hi", options=[], id="r9"),
        "bad_request",
        "r9",
        "'options'",
    ),
    "options-unknown-key": (
        frame(type="prompt", content="hi", options={"temprature": 1}, id="r10"),
        "bad_request",
        "r10",
        "temprature",
    ),
    "options-bad-value": (
        frame(type="prompt", content="hi", options={"n": 0}, id="r11"),
        "bad_request",
        "r11",
        "'n'",
    ),
    "cancel-no-turn": (frame(type="cancel", id="r12"), "bad_request", "r12", "'turn'"),
    "cancel-empty-turn": (frame(type="cancel", turn="", id="r13"), "bad_request", "r13", "turn"),
    "cancel-turn-number": (frame(type="cancel", turn=8), "bad_request", None, "'turn'"),
    "cancel-id-number": (frame(type="cancel", turn="t", id=3), "bad_request", None, "'id'"),
}


@pytest.mark.parametrize(
    ("text", "code", "ref", "word"), BAD_FRAMES.values(), ids=BAD_FRAMES.keys()
)
def test_decode_bad_frames(text: str, code: str, ref: str | None, word: str) -> None:
    """Every bad client frame raises ClientError with its code and the frame's id as ref."""
    with pytest.raises(ClientError) as info:
        decode_client_frame(text, max_prompt_chars=10)
    assert info.value.code == code
    assert info.value.ref == ref
    assert word in info.value.message
    assert info.value.temporary is False


def test_unknown_type_message_is_bounded() -> None:
    """A huge unknown type is cut in the error message, not echoed whole."""
    with pytest.raises(ClientError) as info:
        decode_client_frame(frame(type="x" * 1000), max_prompt_chars=0)
    assert len(info.value.message) < 80


def test_parse_prompt_and_cancel_take_objects() -> None:
    """parse_prompt works on already parsed objects (POST bodies), whatever their type."""
    assert parse_prompt({"content": "hi"}, max_prompt_chars=0) == PromptRequest("hi")
    assert parse_prompt({"type": 5, "content": "hi"}, max_prompt_chars=0) == PromptRequest("hi")


@pytest.mark.parametrize(
    ("text", "expected"),
    [('{"a":1}', {"a": 1}), (b'{"a":"\xc3\xa9"}', {"a": "é"}), ("{}", {})],
    ids=["str", "bytes", "empty"],
)
def test_load_json_object_accepts_objects(text: str | bytes, expected: dict[str, Any]) -> None:
    """load_json_object parses str or UTF-8 bytes holding an object."""
    assert load_json_object(text) == expected


@pytest.mark.parametrize("text", [b"\xff{}", "", "null", "1", "[]"])
def test_load_json_object_refuses_the_rest(text: str | bytes) -> None:
    """Bad bytes, empty text and non-objects are bad_request."""
    with pytest.raises(ClientError) as info:
        load_json_object(text)
    assert info.value.code == "bad_request"


def test_temporary_turn_errors_carry_retry_after() -> None:
    """A temporary failure's error object adds temporary and retry_after_ms to code/message."""
    from server.core.messages import ErrorInfo, TurnEnd, temporary_error

    end = TurnEnd(9, "t1", "failed", (), None, ErrorInfo("rate_limit_exceeded", "slow", True, 2000))
    assert encode(end).endswith(
        b'"error":{"code":"rate_limit_exceeded","message":"slow","temporary":true,'
        b'"retry_after_ms":2000}}'
    )
    unknown = TurnEnd(9, "t1", "failed", (), None, temporary_error("overloaded", "busy", None))
    assert encode(unknown).endswith(b'"temporary":true,"retry_after_ms":null}}')
    final = TurnEnd(9, "t1", "failed", (), None, ErrorInfo("invalid_api_key", "no"))
    assert encode(final).endswith(b'"error":{"code":"invalid_api_key","message":"no"}}')


def test_read_only_mappings_are_written_as_objects() -> None:
    """A read-only view (prompt options) encodes like a dict; other foreign objects raise."""
    options = MappingProxyType({"temperature": 0.5})
    assert dump_json({"options": options}) == b'{"options":{"temperature":0.5}}'
    with pytest.raises(TypeError, match="cannot encode"):
        dump_json({"a": object()})


def test_an_upstream_position_round_trips_and_anything_else_is_refused() -> None:
    """What the broker keeps of a turn's upstream position reads back the same, or not at all."""
    position = ResponsePosition("t1", "resp_1", 41, {"fc_1": 0}, {2: 0})
    assert decode_position(dump_json(position)) == position
    for bad in (b"", b"[]", b'{"turn":"t1","response_id":"r","after":"41"}'):
        with pytest.raises(ValueError, match=r"Expected|Input data|missing"):
            decode_position(bad)
