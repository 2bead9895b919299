"""A room's turns rebuilt from its frames, as any client of PROTOCOL.md must rebuild them.

The load tester and the tests' viewers share it: welcome, snapshot, then sequenced events
(``turn.start``, ``delta``, ``turn.end``) checked for continuity with ``first_seq``, their
strings appended in seq order on top of the snapshot's.

Texts are running digests (with their lengths); a rebuild made with ``keep_text`` keeps the
strings too. Thousands of load-test subscribers each keeping every turn's text would hold
thousands of copies of it. Appending in seq order and hashing as it goes gives the same digest
as hashing the whole text, so "same digest" is "same text".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

TEXT_FIELDS = ("content", "reasoning", "refusal")
SEQUENCED = ("turn.start", "delta", "turn.end")
NO_CALL = -1  # the call index of a choice's own strings in a ``Key``

# A key names one growing string of a turn: (choice, field, tool call index or NO_CALL).
Key = tuple[int, str, int]


class Text:
    """A string built by appending: its length and digest, and the string if kept."""

    __slots__ = ("_hash", "_pieces", "length")

    def __init__(self, *, keep: bool = False) -> None:
        """An empty text; ``keep``: keep the string, not only its digest."""
        self._hash = hashlib.blake2b(digest_size=16)
        self._pieces: list[str] | None = [] if keep else None
        self.length = 0

    def append(self, piece: str) -> None:
        """Append ``piece``."""
        data = piece.encode()
        self._hash.update(data)
        self.length += len(data)
        if self._pieces is not None:
            self._pieces.append(piece)

    def digest(self) -> tuple[int, bytes]:
        """What two equal texts share (the length in UTF-8 bytes, and a hash)."""
        return self.length, self._hash.digest()

    def __str__(self) -> str:
        """The string.

        Raises:
            ValueError: the text was made without ``keep``.
        """
        if self._pieces is None:
            raise ValueError("this text keeps its digest only")
        if len(self._pieces) > 1:
            self._pieces[:] = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""


@dataclass
class TurnText:
    """One turn as a client rebuilt it."""

    keep: bool = False
    status: str = "streaming"
    # The turn.end frame; for a turn that had ended before a snapshot, its status, usage and
    # error as the snapshot has them.
    end: dict[str, Any] | None = None
    texts: dict[Key, Text] = field(default_factory=dict)
    calls: dict[tuple[int, int], list[str | None]] = field(default_factory=dict)  # id, name
    indexes: set[int] = field(default_factory=set)  # the choices seen, even empty ones

    def grown(self, key: Key) -> Text:
        """The growing string at ``key`` (empty at first)."""
        found = self.texts.get(key)
        if found is None:
            found = self.texts[key] = Text(keep=self.keep)
        return found

    def apply_choices(self, choices: list[dict[str, Any]]) -> None:
        """Append a delta's choices (or a snapshot's full choices)."""
        for choice in choices:
            index = choice["index"]
            self.indexes.add(index)
            for name in TEXT_FIELDS:
                piece = choice.get(name)
                if piece:
                    self.grown((index, name, NO_CALL)).append(piece)
            for call in choice.get("tool_calls") or ():
                # PROTOCOL.md: id and name are set once, when first seen.
                ident = self.calls.setdefault((index, call["index"]), [None, None])
                for slot, name in enumerate(("id", "name")):
                    if ident[slot] is None and call.get(name) is not None:
                        ident[slot] = call[name]
                if call.get("arguments"):
                    self.grown((index, "arguments", call["index"])).append(call["arguments"])

    def digests(self) -> dict[Key, tuple[int, bytes]]:
        """Every non-empty string's digest."""
        return {k: t.digest() for k, t in self.texts.items() if t.length}

    def text(self, index: int = 0, name: str = "content") -> str:
        """Choice ``index``'s ``name`` string.

        Raises:
            ValueError: the turn keeps digests only (made without ``keep``).
        """
        if not self.keep:
            raise ValueError("this turn keeps digests only")
        found = self.texts.get((index, name, NO_CALL))
        return "" if found is None else str(found)

    def choices(self) -> list[dict[str, Any]]:
        """The choices in the TURN shape of a snapshot, without ``finish_reason``.

        A delta carries none; needs ``keep``.
        """
        out = []
        for index in sorted(self.indexes):
            view: dict[str, Any] = {"index": index}
            view.update((name, self.text(index, name)) for name in TEXT_FIELDS)
            view["tool_calls"] = [
                {"index": call, "id": ident[0], "name": ident[1], "arguments": ""}
                for (choice, call), ident in sorted(self.calls.items())
                if choice == index
            ]
            for entry in view["tool_calls"]:
                arguments = self.texts.get((index, "arguments", entry["index"]))
                entry["arguments"] = "" if arguments is None else str(arguments)
            out.append(view)
        return out

    @classmethod
    def from_view(cls, view: dict[str, Any], *, keep: bool = False) -> TurnText:
        """A TURN object of a snapshot."""
        turn = cls(keep=keep, status=view["status"])
        turn.apply_choices(view["choices"])
        if view["status"] != "streaming":
            turn.end = {
                "status": view["status"],
                "usage": view.get("usage"),
                "error": view.get("error"),
            }
        return turn


@dataclass
class Rebuild:
    """One client's view of a room across reconnects: seqs, epoch, turns, problems.

    ``keep_text``: keep every string (``TurnText.text``), not only digests.
    """

    keep_text: bool = False
    epoch: str | None = None
    seq: int = 0
    turns: dict[str, TurnText] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    recovered: int = 0
    snapshots: int = 0

    def resume_query(self) -> str:
        """The query of a reconnect that resumes from what was seen."""
        return "" if self.epoch is None else f"?epoch={self.epoch}&since={self.seq}"

    def apply(self, frame: dict[str, Any]) -> None:
        """Any frame from the server: the welcome, a snapshot, a sequenced event.

        The rest (presence, errors) rebuilds nothing.
        """
        kind = frame["type"]
        if kind in SEQUENCED:
            self.event(frame)
        elif kind == "welcome":
            self.welcome(frame)
        elif kind == "snapshot":
            self.snapshot(frame)

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
        self.turns = {
            view["id"]: TurnText.from_view(view, keep=self.keep_text) for view in frame["turns"]
        }

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
            turn = self.turns[frame["turn"]] = TurnText(keep=self.keep_text)
        if kind == "delta":
            turn.apply_choices(frame["choices"])
        elif kind == "turn.end":
            turn.status = frame["status"]
            turn.end = frame
