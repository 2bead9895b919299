"""Numbers of a ``fanout loadtest`` run: percentiles, the JSON report and the text table.

Latencies come from the subscribers that read normally; the deliberately slow ones count in
deliveries, merges, closes and the correctness check, not in the latency figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from server.core.codes import CloseCode
from server.tools.loadtest_client import LoadSubscriber

QUANTILES = 200  # points of each CDF kept in the report
TIMELINE_BINS = 120


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of sorted values (0 for none)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Iterable[float]) -> dict[str, Any]:
    """n, mean, p50, p90, p99 and max of ``values`` (and their CDF as quantiles)."""
    ordered = sorted(values)
    n = len(ordered)
    cdf = [percentile(ordered, 100 * (i + 1) / QUANTILES) for i in range(QUANTILES)] if n else []
    return {
        "n": n,
        "mean": sum(ordered) / n if n else 0.0,
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if n else 0.0,
        "cdf": cdf,
    }


def _deliveries(sub: LoadSubscriber) -> Iterable[tuple[int, float]]:
    """Every seq the subscriber got and when, merged deltas counting for each seq they hold."""
    yield from zip(sub.seqs, sub.times, strict=True)
    for first, seq, when in sub.merged:
        for covered in range(first, seq):
            yield covered, when


def latency_stats(subs: Sequence[LoadSubscriber]) -> dict[str, Any]:
    """Connect times, time to first delta, fan-out skew, delivery lag, inter-delta gaps (ms)."""
    normal = [s for s in subs if not s.slow]
    spans: dict[tuple[str, int], list[float]] = {}
    for sub in normal:
        name = sub.room.name
        for seq, when in _deliveries(sub):
            span = spans.get((name, seq))
            if span is None:
                spans[(name, seq)] = [when, when]
            elif when < span[0]:
                span[0] = when
            elif when > span[1]:
                span[1] = when
    lag = (
        (when - spans[(sub.room.name, seq)][0]) * 1000
        for sub in normal
        for seq, when in _deliveries(sub)
    )
    first_delta = (
        (when - sub.room.posted[turn]) * 1000
        for sub in normal
        for turn, when in sub.first_delta.items()
        if turn in sub.room.posted
    )
    return {
        "connect_ms": summary(s.connect_ms for s in subs if s.connect_ms is not None),
        "first_delta_ms": summary(first_delta),
        "skew_ms": summary((b - a) * 1000 for a, b in spans.values()),
        "lag_ms": summary(lag),
        "gap_ms": summary(g * 1000 for s in normal for g in s.gaps),
    }


def timeline(subs: Sequence[LoadSubscriber], start: float, end: float) -> dict[str, Any]:
    """Frames delivered per second over the run, in ``TIMELINE_BINS`` bins."""
    width = max((end - start) / TIMELINE_BINS, 0.01)
    counts = [0] * TIMELINE_BINS
    for sub in subs:
        for when in sub.times:
            counts[min(TIMELINE_BINS - 1, max(0, int((when - start) / width)))] += 1
    return {"bin_s": width, "per_second": [c / width for c in counts]}


def counts(subs: Sequence[LoadSubscriber], start: float, end: float) -> dict[str, Any]:
    """Deliveries, merged deltas, closes and resumes."""
    frames = sum(len(s.seqs) for s in subs)
    merged_seqs = sum(seq - first + 1 for s in subs for first, seq, _ in s.merged)
    merged_frames = sum(len(s.merged) for s in subs)
    slow = [s for s in subs if s.slow]
    return {
        "frames": frames,
        "seqs": frames - merged_frames + merged_seqs,
        "frames_per_second": frames / (end - start) if end > start else 0.0,
        "merged_frames": merged_frames,
        "merged_seqs": merged_seqs,
        "slow_subscribers": len(slow),
        "closes_4000": sum(s.closes.get(CloseCode.SLOW_CONSUMER, 0) for s in subs),
        "dropped": sum(s.closes.get(1006, 0) for s in subs),
        "reconnects": sum(s.reconnects for s in subs),
        "resumed_recovered": sum(s.rebuild.recovered for s in subs),
        "resumed_snapshot": sum(max(0, s.rebuild.snapshots - 1) for s in subs),
    }


ROWS = (
    ("connect_ms", "connect (ms)"),
    ("first_delta_ms", "first delta (ms)"),
    ("skew_ms", "fan-out skew (ms)"),
    ("lag_ms", "delivery lag (ms)"),
    ("gap_ms", "inter-delta gap (ms)"),
)


def table(report: dict[str, Any]) -> str:
    """The human-readable report."""
    opts = report["options"]
    c = report["counts"]
    lines = [
        f"fanout loadtest  {opts['url']}  {opts['subscribers']} subscribers in "
        f"{opts['rooms']} room(s), {opts['prompts']} prompt(s) per room, "
        f"{report['wall_seconds']:.1f} s",
        "",
        f"{'':24}{'n':>9}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}",
    ]
    for key, label in ROWS:
        s = report["latency"][key]
        lines.append(
            f"{label:24}{s['n']:>9,}{s['p50']:>10.2f}{s['p90']:>10.2f}"
            f"{s['p99']:>10.2f}{s['max']:>10.2f}"
        )
    cpu = report["client_cpu_seconds"]
    share = 100 * cpu / report["wall_seconds"] if report["wall_seconds"] else 0.0
    lines += [
        "",
        f"{'deliveries':15}{c['frames']:,} frames ({c['frames_per_second']:,.0f}/s), "
        f"{c['seqs']:,} seqs",
        f"{'merged':15}{c['merged_frames']:,} frames covering {c['merged_seqs']:,} seqs",
        f"{'slow readers':15}{c['slow_subscribers']} stalled; closes 4000: {c['closes_4000']}, "
        f"dropped: {c['dropped']}; resumed {c['resumed_recovered']} recovered, "
        f"{c['resumed_snapshot']} from a snapshot",
        f"{'client CPU':15}{cpu:.2f} s ({share:.0f}% of the wall time)"
        + ("  -- the client may be the bottleneck" if share > 90 else ""),
    ]
    if report["ok"]:
        lines.append(
            f"{'check':15}OK: {report['checked']} subscribers rebuilt {report['turns']} turn(s) "
            "exactly, no gap or duplicate"
        )
    else:
        lines.append(f"{'check':15}FAILED ({len(report['failures'])} problem(s)):")
        lines += [f"  - {reason}" for reason in report["failures"][:20]]
        if len(report["failures"]) > 20:
            lines.append(f"  ... and {len(report['failures']) - 20} more (see the JSON report)")
    return "\n".join(lines)


def without_cdfs(report: dict[str, Any]) -> dict[str, Any]:
    """The report with its CDF point lists left out (for a compact view)."""
    latency = {k: {f: v for f, v in s.items() if f != "cdf"} for k, s in report["latency"].items()}
    return {**report, "latency": latency}
