"""The load tester's verdict.

What a subscriber rebuilt (``rebuild.Rebuild``), checked against the room's snapshot.
"""

from __future__ import annotations

from typing import Any

from server.tools.rebuild import Rebuild, TurnText


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
