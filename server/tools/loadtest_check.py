"""The load tester's client-side rules: rebuild a room's turns from frames, as any client of
PROTOCOL.md must, and check them against the room's snapshot.

Texts are kept as running digests (with their lengths), not as strings: thousands of
subscribers each rebuilding every turn would otherwise hold thousands of copies of it.
Appending in seq order and hashing as it goes gives the same digest as hashing the whole
text, so "same digest" is "same text".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

TEXT_FIELDS = ("content", "reasoning", "refusal")
SEQUENCED = ("turn.start", "delta", "turn.end")


class Text:
    """A text built by appending: its length and a digest, not the text itself."""

    __slots__ = ("_hash", "length")

    def __init__(self, initial: str = "") -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self.length = 0
        if initial:
            self.append(initial)

    def append(self, piece: str) -> None:
        """Append ``piece``."""
        data = piece.encode()
        self._hash.update(data)
        self.length += len(data)

    def digest(self) -> tuple[int, bytes]:
        """What two equal texts share."""
        return self.length, self._hash.digest()


# A key names one growing string of a turn: (choice, field, tool call index or -1).
Key = tuple[int, str, int]


@dataclass
class TurnText:
    """One turn as a client rebuilt it."""

    status: str = "streaming"
    texts: dict[Key, Text] = field(default_factory=dict)
    calls: dict[tuple[int, int], list[str | None]] = field(default_factory=dict)

    def text(self, key: Key) -> Text:
        """The growing string at ``key`` (empty at first)."""
        found = self.texts.get(key)
        if found is None:
            found = self.texts[key] = Text()
        return found

    def apply_choices(self, choices: list[dict[str, Any]]) -> None:
        """Append a delta's choices (or a snapshot's full choices)."""
        for choice in choices:
            index = choice["index"]
            for name in TEXT_FIELDS:
                piece = choice.get(name)
                if piece:
                    self.text((index, name, -1)).append(piece)
            for call in choice.get("tool_calls") or ():
                ident = self.calls.setdefault((index, call["index"]), [None, None])
                for slot, name in enumerate(("id", "name")):
                    if ident[slot] is None and call.get(name) is not None:
                        ident[slot] = call[name]
                if call.get("arguments"):
                    self.text((index, "arguments", call["index"])).append(call["arguments"])

    def digests(self) -> dict[Key, tuple[int, bytes]]:
        """Every non-empty string's digest."""
        return {k: t.digest() for k, t in self.texts.items() if t.length}

    @classmethod
    def from_view(cls, view: dict[str, Any]) -> TurnText:
        """A TURN object of a snapshot."""
        turn = cls(status=view["status"])
        turn.apply_choices(view["choices"])
        return turn


@dataclass
class Rebuild:
    """One subscriber's view of its room across reconnects: seqs, epoch, turns, problems."""

    epoch: str | None = None
    seq: int = 0
    turns: dict[str, TurnText] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    recovered: int = 0
    snapshots: int = 0

    def resume_query(self) -> str:
        """The query of a reconnect that resumes from what was seen."""
        return "" if self.epoch is None else f"?epoch={self.epoch}&since={self.seq}"

    def welcome(self, frame: dict[str, Any]) -> None:
        """The first frame of a connection."""
        if frame["recovered"]:
            self.recovered += 1
            if frame["epoch"] != self.epoch:
                self.problems.append(f"recovered on epoch {frame['epoch']}, not {self.epoch}")
        self.epoch = frame["epoch"]

    def snapshot(self, frame: dict[str, Any]) -> None:
        """A snapshot replaces everything: live events follow from its seq."""
        self.snapshots += 1
        self.epoch = frame["epoch"]
        self.seq = frame["seq"]
        self.turns = {view["id"]: TurnText.from_view(view) for view in frame["turns"]}

    def event(self, frame: dict[str, Any]) -> None:
        """A sequenced event: check continuity (PROTOCOL.md ``first_seq``), then apply it."""
        seq = frame["seq"]
        first = frame.get("first_seq", seq)
        if first != self.seq + 1:
            what = "gap" if first > self.seq + 1 else "duplicate"
            self.problems.append(f"{what}: seq {self.seq} then {first}..{seq}")
        self.seq = seq
        kind = frame["type"]
        turn = self.turns.get(frame["turn"])
        if turn is None:
            turn = self.turns[frame["turn"]] = TurnText()
        if kind == "delta":
            turn.apply_choices(frame["choices"])
        elif kind == "turn.end":
            turn.status = frame["status"]


def check(rebuild: Rebuild, snapshot: dict[str, Any]) -> list[str]:
    """What differs between a subscriber's rebuilt turns and the room's snapshot.

    Returns:
        Reasons (empty when the subscriber saw every seq once, reached the snapshot's seq on
        its epoch, and rebuilt every turn of the snapshot exactly).
    """
    reasons = list(rebuild.problems)
    if rebuild.epoch != snapshot["epoch"]:
        reasons.append(f"epoch {rebuild.epoch}, the room's is {snapshot['epoch']}")
    if rebuild.seq != snapshot["seq"]:
        reasons.append(f"reached seq {rebuild.seq}, the room is at {snapshot['seq']}")
    for view in snapshot["turns"]:
        mine = rebuild.turns.get(view["id"])
        if mine is None:
            reasons.append(f"turn {view['id']}: never seen")
            continue
        expected = TurnText.from_view(view)
        if mine.status != expected.status:
            reasons.append(f"turn {view['id']}: status {mine.status}, not {expected.status}")
        got, want = mine.digests(), expected.digests()
        for key in sorted(got.keys() | want.keys()):
            if got.get(key) != want.get(key):
                have = got.get(key, (0, b""))[0]
                reasons.append(
                    f"turn {view['id']}: choice {key[0]} {key[1]} differs "
                    f"({have} bytes, the room has {want.get(key, (0, b''))[0]})"
                )
        if mine.calls != expected.calls:
            reasons.append(f"turn {view['id']}: tool call ids or names differ")
    return reasons
