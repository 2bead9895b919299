"""The issue's targets, judged from the records of one run (fanout against the peers)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

Rec = dict[str, Any]

PACED_VIEWERS = 5000
PACED_P99 = 0.100
IDLE_BYTES = 20_000  # 20 kB
STALL_RATIO = 1.10
# fanout's outbox limit (limits.outbox_bytes) plus one transport buffer (aiohttp's 64 KiB
# high-water mark) and slack for the merged delta that replaces a compacted backlog.
OUTBOX_BOUND = 1_048_576 + 65_536 + 262_144


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target: what it asks, what fanout did, and whether that meets it."""

    target: str
    measured: str
    met: bool | None  # None: not measured in this run

    @property
    def word(self) -> str:
        """The verdict as written in the report: met, **missed** or not measured."""
        return {True: "met", False: "**missed**", None: "not measured"}[self.met]


def retained_per_stalled(r: Rec) -> float:
    """What the stalled readers cost in the memory probe, per reader, in bytes.

    The growth over the answer with them less the growth over the same answer without.
    """
    rss = r["rss"]
    extra = (rss["stalled_after"] - rss["stalled_before"]) - (rss["after"] - rss["before"])
    return float(extra / r["stalled"])


def _records(saved: dict[str, Any], scenario: str, system: str) -> list[Rec]:
    return [r for r in saved["records"] if r["scenario"] == scenario and r["system"] == system]


def _rate(t: Rec) -> float:
    return float(t["tokens"] / t["receipt_seconds"]) if t["receipt_seconds"] > 0 else 0.0


def _burst_ratio(saved: dict[str, Any], peer: str, needed: float, name: str) -> Verdict:
    target = f"burst deliveries/s >= {needed:g}x {name} (same run)"
    recs = _records(saved, "burst", "fanout")
    ours = {r["round"]: _rate(r["turn"]) for r in recs}
    theirs = {r["round"]: _rate(r["turn"]) for r in _records(saved, "burst", peer)}
    rounds = sorted(set(ours) & set(theirs))
    if not rounds:
        return Verdict(target, "-", None)
    ratio = statistics.median(ours.values()) / statistics.median(theirs.values())
    per_round = [ours[r] / theirs[r] for r in rounds]
    frames = statistics.median(
        r["turn"]["frames"] / r["turn"]["receipt_seconds"] for r in recs if r["turn"]["frames"]
    )
    measured = (
        f"{ratio:.2f}x ({statistics.median(ours.values()):,.0f} vs "
        f"{statistics.median(theirs.values()):,.0f}/s; per round {min(per_round):.2f}-"
        f"{max(per_round):.2f}x; fanout's frames/s: {frames:,.0f})"
    )
    return Verdict(target, measured, ratio >= needed)


def _paced(saved: dict[str, Any]) -> Verdict:
    target = f"{PACED_VIEWERS:,} viewers at 80 tokens/s, p99 <= {PACED_P99 * 1000:.0f} ms"
    recs = _records(saved, "paced", "fanout")
    if not recs:
        return Verdict(target, "-", None)
    rounds = sorted({r["round"] for r in recs})
    passing = []
    for rnd in rounds:
        ok = [
            r["viewers"]
            for r in recs
            if r["round"] == rnd and r["turn"]["complete"] and r["turn"]["p99"] <= PACED_P99
        ]
        passing.append(max(ok, default=0))
    at_target = [r["turn"] for r in recs if r["viewers"] == PACED_VIEWERS]
    best = f"largest passing step per round: {', '.join(f'{n:,}' for n in passing)}"
    if not at_target:
        return Verdict(target, f"never reached {PACED_VIEWERS:,} ({best})", False)
    p99 = statistics.median(t["p99"] for t in at_target)
    complete = all(t["complete"] for t in at_target)
    shown = "lost tokens" if math.isinf(p99) else f"{p99 * 1000:,.0f} ms"
    measured = f"p99 at {PACED_VIEWERS:,}: {shown} (median of {len(at_target)}); {best}"
    return Verdict(target, measured, complete and p99 <= PACED_P99)


def _idle(saved: dict[str, Any]) -> Verdict:
    target = f"idle memory <= {IDLE_BYTES / 1000:.0f} kB per viewer"
    recs = _records(saved, "idle", "fanout")
    if not recs:
        return Verdict(target, "-", None)
    per = [(r["rss"]["after"] - r["rss"]["before"]) / r["viewers"] for r in recs]
    value = statistics.median(per)
    measured = f"{value / 1000:.1f} kB ({min(per) / 1000:.1f}-{max(per) / 1000:.1f})"
    return Verdict(target, measured, value <= IDLE_BYTES)


def _stalled(saved: dict[str, Any]) -> Verdict:
    target = f"5% stalled readers: healthy p99 within {STALL_RATIO - 1:.0%} of the run without"
    recs = _records(saved, "stalled", "fanout")
    ratios = [
        r["turn"]["p99"] / r["baseline"]["p99"]
        for r in recs
        if r["turn"] is not None and r["baseline"]["p99"] > 0
    ]
    if not ratios:
        return Verdict(target, "-", None)
    value = statistics.median(ratios)
    measured = f"{value:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
    return Verdict(target, measured, value <= STALL_RATIO)


def _bounded(saved: dict[str, Any]) -> Verdict:
    target = "server memory bounded with stalled readers"
    recs = _records(saved, "memory", "fanout")
    if not recs:
        return Verdict(target, "-", None)
    kept = [retained_per_stalled(r) for r in recs]
    sent = statistics.median(r["baseline"]["frame_bytes"] for r in recs)
    value = statistics.median(kept)
    measured = (
        f"{value / 1e6:.2f} MB kept per stalled reader ({min(kept) / 1e6:.2f}-"
        f"{max(kept) / 1e6:.2f}) of {sent / 1e6:.2f} MB sent; bound "
        f"{OUTBOX_BOUND / 1e6:.2f} MB"
    )
    if sent <= OUTBOX_BOUND:
        return Verdict(target, measured + " (answer too short to test the bound)", None)
    return Verdict(target, measured, value <= OUTBOX_BOUND)


def _upstream(saved: dict[str, Any]) -> Verdict:
    target = "one upstream request per prompt, whatever the viewers"
    turns = [
        r["turn"]
        for r in saved["records"]
        if r["system"] == "fanout" and r["turn"] is not None and r["scenario"] != "memory"
    ]
    if not turns:
        return Verdict(target, "-", None)
    counts = sorted({t["upstream_requests"] for t in turns})
    most = max(t["readers"] for t in turns)
    measured = (
        f"{'/'.join(map(str, counts))} per prompt in {len(turns)} turns, up to {most:,} viewers"
    )
    return Verdict(target, measured, counts == [1])


def judge(saved: dict[str, Any]) -> list[Verdict]:
    """Every target."""
    return [
        _burst_ratio(saved, "websockets", 1.0, "websockets.broadcast"),
        _burst_ratio(saved, "socketio", 8.0, "python-socketio"),
        _paced(saved),
        _idle(saved),
        _stalled(saved),
        _bounded(saved),
        _upstream(saved),
    ]


def table(saved: dict[str, Any]) -> str:
    """The verdicts as a markdown table."""
    rows = ["| target | fanout measured | verdict |", "|---|---|---|"]
    rows += [f"| {v.target} | {v.measured} | {v.word} |" for v in judge(saved)]
    return "\n".join(rows)
