"""The client-side rebuilder the tests and the load tester share (server.tools.rebuild)."""

from __future__ import annotations

from typing import Any

import pytest

from server.tools.rebuild import Rebuild, Text, TurnText

WELCOME = {"type": "welcome", "epoch": "e", "recovered": False, "seq": 0}
EMPTY = {"type": "snapshot", "epoch": "e", "seq": 0, "turns": []}
START = {"type": "turn.start", "seq": 1, "turn": "t"}


def delta(seq: int, *choices: dict[str, Any], first: int | None = None) -> dict[str, Any]:
    """A delta frame of turn t."""
    frame: dict[str, Any] = {"type": "delta", "seq": seq, "turn": "t", "choices": list(choices)}
    return frame if first is None else {**frame, "first_seq": first}


def end(seq: int, status: str = "completed") -> dict[str, Any]:
    """A turn.end frame of turn t."""
    return {"type": "turn.end", "seq": seq, "turn": "t", "status": status, "usage": None}


def turn_view(status: str, **choice: Any) -> dict[str, Any]:
    """A snapshot TURN of turn t with one choice."""
    full = {"index": 0, "content": "", "reasoning": "", "refusal": "", "tool_calls": []}
    full.update(choice)
    return {"id": "t", "status": status, "choices": [full], "usage": None, "error": None}


def played(*frames: dict[str, Any]) -> Rebuild:
    """A rebuild that kept its text, after ``frames``."""
    rebuild = Rebuild(keep_text=True)
    for frame in frames:
        rebuild.apply(frame)
    return rebuild


C = {"index": 0}


@pytest.mark.parametrize(
    ("frames", "text", "problems"),
    [
        (
            (
                WELCOME,
                EMPTY,
                START,
                delta(2, C | {"content": "Hel"}),
                delta(3, C | {"content": "lo"}),
            ),
            "Hello",
            [],
        ),
        ((WELCOME, EMPTY, START, delta(3, C | {"content": "Hello"}, first=2)), "Hello", []),
        (
            (
                WELCOME,
                EMPTY,
                START,
                delta(2, C | {"content": "Hel"}),
                delta(4, C | {"content": "!"}),
            ),
            "Hel!",
            ["gap: seq 2 then 4..4"],
        ),
        (
            (
                WELCOME,
                EMPTY,
                START,
                delta(2, C | {"content": "Hel"}),
                delta(2, C | {"content": "Hel"}),
            ),
            "HelHel",
            ["duplicate: seq 2 then 2..2"],
        ),
        (
            (
                WELCOME,
                EMPTY,
                START,
                delta(2, C | {"content": "a"}),
                delta(5, C | {"content": "b"}, first=3),
            ),
            "ab",
            [],
        ),
        (
            (
                WELCOME,
                EMPTY,
                START,
                delta(2, C | {"content": "a"}),
                delta(5, C | {"content": "b"}, first=2),
            ),
            "ab",
            ["duplicate: seq 2 then 2..5"],
        ),
    ],
    ids=["in order", "merged", "gap", "duplicate", "merged run", "merged overlap"],
)
def test_deltas_append_in_seq_order_and_continuity_is_checked(
    frames: tuple[dict[str, Any], ...], text: str, problems: list[str]
) -> None:
    """Deltas append in order; first_seq..seq covers a merged run; a gap or overlap is named."""
    rebuild = played(*frames)
    assert rebuild.turns["t"].text() == text
    assert rebuild.problems == problems
    assert rebuild.seq == frames[-1]["seq"]


def test_a_snapshot_then_deltas_continue_its_text() -> None:
    """A streaming turn's snapshot text, then the deltas after the snapshot's seq."""
    snap = {
        "type": "snapshot",
        "epoch": "e",
        "seq": 7,
        "turns": [turn_view("streaming", content="Why", reasoning="think")],
    }
    rebuild = played(
        {**WELCOME, "seq": 7}, snap, delta(8, C | {"content": " did", "reasoning": "ing"}), end(9)
    )
    turn = rebuild.turns["t"]
    assert (turn.text(), turn.text(0, "reasoning")) == ("Why did", "thinking")
    assert (turn.status, rebuild.problems) == ("completed", [])
    assert turn.end == end(9)


def test_a_new_snapshot_replaces_what_was_rebuilt() -> None:
    """A reconnect answered with a snapshot starts again from it (no text doubled)."""
    before = (WELCOME, EMPTY, START, delta(2, C | {"content": "Hel"}))
    snap = {
        "type": "snapshot",
        "epoch": "e2",
        "seq": 3,
        "turns": [turn_view("completed", content="Hello")],
    }
    rebuild = played(*before, {**WELCOME, "epoch": "e2", "seq": 3}, snap)
    turn = rebuild.turns["t"]
    assert (turn.text(), turn.status, rebuild.epoch, rebuild.seq) == ("Hello", "completed", "e2", 3)
    assert turn.end == {"status": "completed", "usage": None, "error": None}
    assert (rebuild.snapshots, rebuild.problems) == (2, [])


def test_a_recovered_welcome_keeps_the_turns_and_checks_the_epoch() -> None:
    """A recovered resume continues the same turns; recovered on another epoch is a problem."""
    rebuild = played(WELCOME, EMPTY, START, delta(2, C | {"content": "a"}))
    assert rebuild.resume_query() == "?epoch=e&since=2"
    rebuild.apply({"type": "welcome", "epoch": "e", "recovered": True, "seq": 2})
    rebuild.apply(delta(3, C | {"content": "b"}))
    assert (rebuild.turns["t"].text(), rebuild.recovered, rebuild.problems) == ("ab", 1, [])
    rebuild.apply({"type": "welcome", "epoch": "other", "recovered": True, "seq": 3})
    assert rebuild.problems == ["recovered on epoch other, not e"]


def test_tool_calls_set_id_and_name_once_and_append_arguments() -> None:
    """Arguments append per call index; id and name are set when first seen, never changed."""
    rebuild = played(
        WELCOME,
        EMPTY,
        START,
        delta(
            2, C | {"tool_calls": [{"index": 0, "id": "call_1", "name": "get", "arguments": '{"c'}]}
        ),
        delta(
            3,
            C
            | {
                "tool_calls": [
                    {"index": 1, "id": "call_2", "name": "put"},
                    {"index": 0, "id": "other", "arguments": 'ity":1}'},
                ]
            },
        ),
        delta(4, C | {"tool_calls": [{"index": 1, "arguments": "{}"}]}),
    )
    assert rebuild.turns["t"].choices() == [
        {
            "index": 0,
            "content": "",
            "reasoning": "",
            "refusal": "",
            "tool_calls": [
                {"index": 0, "id": "call_1", "name": "get", "arguments": '{"city":1}'},
                {"index": 1, "id": "call_2", "name": "put", "arguments": "{}"},
            ],
        },
    ]


def test_several_choices_grow_apart_and_show_in_index_order() -> None:
    """Each choice has its own strings; a choice seen only in a snapshot still shows."""
    snap = {
        "type": "snapshot",
        "epoch": "e",
        "seq": 1,
        "turns": [
            {
                "id": "t",
                "status": "streaming",
                "usage": None,
                "error": None,
                "choices": [
                    {"index": 2, "content": "", "reasoning": "", "refusal": "", "tool_calls": []}
                ],
            }
        ],
    }
    rebuild = played(
        {**WELCOME, "seq": 1},
        snap,
        delta(2, {"index": 1, "content": "A man"}, {"index": 0, "content": "Why"}),
        delta(3, {"index": 0, "content": " did"}, {"index": 1, "refusal": "no"}),
    )
    turn = rebuild.turns["t"]
    assert [c["index"] for c in turn.choices()] == [0, 1, 2]
    assert (turn.text(0), turn.text(1), turn.text(1, "refusal"), turn.text(2)) == (
        "Why did",
        "A man",
        "no",
        "",
    )


def test_digests_match_exactly_when_texts_do() -> None:
    """A digest-only rebuild agrees with the snapshot exactly when the texts do.

    Not when one byte differs; it never hands out the string.
    """
    live = Rebuild()
    for frame in (
        WELCOME,
        EMPTY,
        START,
        delta(2, C | {"content": "é"}),
        delta(3, C | {"content": "🚀"}),
    ):
        live.apply(frame)
    same = TurnText.from_view(turn_view("streaming", content="é🚀"))
    other = TurnText.from_view(turn_view("streaming", content="é🚁"))
    assert live.turns["t"].digests() == same.digests() != other.digests()
    assert live.turns["t"].digests()[0, "content", -1][0] == len("é🚀".encode())
    with pytest.raises(ValueError, match="digests only"):
        live.turns["t"].text()


def test_presence_and_errors_rebuild_nothing() -> None:
    """Unsequenced frames move no seq and make no turn."""
    rebuild = played(
        WELCOME,
        EMPTY,
        {"type": "presence", "viewers": 3},
        {"type": "error", "code": "bad_request", "message": "x"},
    )
    assert (rebuild.seq, rebuild.turns, rebuild.problems) == (0, {}, [])


def test_a_kept_text_is_the_pieces_joined() -> None:
    """``Text`` keeps the appended pieces as one string when asked to."""
    text = Text(keep=True)
    for piece in ("a", "", "bc", "🚀"):
        text.append(piece)
    assert (str(text), str(text), text.length) == ("abc🚀", "abc🚀", 7)
