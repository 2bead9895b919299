"""Benchmark records (as saved in bench/results.json) to tables, verdicts and the docs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import chart, verdicts
from .scenarios import Record
from .systems import BY_KEY
from .verdicts import retained_per_stalled

Rec = dict[str, Any]
SATURATED = 0.90  # a load generator (process or its core) this busy limits what it measures
SHARED = 0.10  # more than this of the server's core went to other processes


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if math.isinf(seconds):
        return "lost"
    return f"{seconds * 1000:,.0f}" if seconds >= 0.1 else f"{seconds * 1000:,.1f}"


def _pct(x: float) -> str:
    return f"{x:.0%}"


def _kb(x: float) -> str:
    return f"{x / 1000:,.1f}"


def _spread(values: list[float], fmt: Callable[[float], str]) -> str:
    """``median (min-max)`` of the values, or the one value."""
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def flags(turn: Rec) -> list[str]:
    """Why a turn's numbers may not be the server's alone."""
    out = []
    if turn["gen_cpu"] >= SATURATED:
        out.append("generator saturated")
    elif turn["client_core"] >= SATURATED:
        out.append("CPU 1 full")
    if turn["server_core"] - turn["server_cpu"] >= SHARED:
        out.append("CPU 0 shared")
    if not turn["complete"]:
        out.append(f"incomplete ({turn['tokens'] / max(turn['expected'], 1):.0%} delivered)")
    return out


def _flag_summary(turns: Iterable[Rec]) -> str:
    counts: dict[str, int] = {}
    total = 0
    for t in turns:
        total += 1
        for f in flags(t):
            key = f.split(" (")[0]
            counts[key] = counts.get(key, 0) + 1
    return "; ".join(f"{k} {n}/{total}" for k, n in counts.items())


def rate(t: Rec) -> float:
    """Deliveries per second of receipt."""
    return float(t["tokens"] / t["receipt_seconds"]) if t["receipt_seconds"] > 0 else 0.0


def label(key: str) -> str:
    """A system's name in tables."""
    return BY_KEY[key].label if key in BY_KEY else key


def _by(records: list[Rec], scenario: str) -> dict[str, list[Rec]]:
    out: dict[str, list[Rec]] = {}
    for r in records:
        if r["scenario"] == scenario:
            out.setdefault(r["system"], []).append(r)
    return out


def burst_table(records: list[Rec]) -> str:
    """Deliveries per second in the burst, per system."""
    rows = [
        "| system | deliveries/s, median (min-max) | frames/s | delivered | server CPU "
        "| generator CPU (max) | upstream requests per prompt | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, recs in _by(records, "burst").items():
        turns = [r["turn"] for r in recs]
        frames = statistics.median(
            t["frames"] / t["receipt_seconds"] if t["receipt_seconds"] else 0.0 for t in turns
        )
        rows.append(
            f"| {label(key)} | {_spread([rate(t) for t in turns], lambda x: f'{x:,.0f}')} "
            f"| {frames:,.0f} | {min(t['tokens'] / t['expected'] for t in turns):.0%} "
            f"| {_pct(statistics.median(t['server_cpu'] for t in turns))} "
            f"| {_pct(max(t['gen_cpu'] for t in turns))} "
            f"| {_requests(turns)} "
            f"| {_flag_summary(turns)} |"
        )
    return "\n".join(rows)


def paced_table(records: list[Rec]) -> str:
    """Latency per system and viewer count at the paced rate."""
    rows = [
        "| system | viewers | rounds | p50 ms | p99 ms, median (min-max) | delivered (min) "
        "| server CPU | generator CPU (max) | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, recs in _by(records, "paced").items():
        steps: dict[int, list[Rec]] = {}
        for r in recs:
            steps.setdefault(r["viewers"], []).append(r["turn"])
        for viewers, turns in sorted(steps.items()):
            rows.append(
                f"| {label(key)} | {viewers:,} | {len(turns)} "
                f"| {_ms(statistics.median(t['p50'] for t in turns))} "
                f"| {_spread([t['p99'] for t in turns], _ms)} "
                f"| {min(t['tokens'] / t['expected'] for t in turns):.1%} "
                f"| {_pct(statistics.median(t['server_cpu'] for t in turns))} "
                f"| {_pct(max(t['gen_cpu'] for t in turns))} | {_flag_summary(turns)} |"
            )
    return "\n".join(rows)


def per_viewer_bytes(r: Rec) -> float:
    """Idle memory per viewer, in bytes."""
    return float((r["rss"]["after"] - r["rss"]["before"]) / r["viewers"])


def idle_table(records: list[Rec]) -> str:
    """Server memory per idle viewer."""
    rows = [
        "| system | idle viewers | RSS before MB | RSS after MB "
        "| kB per viewer, median (min-max) |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, recs in _by(records, "idle").items():
        before = statistics.median(r["rss"]["before"] for r in recs)
        after = statistics.median(r["rss"]["after"] for r in recs)
        rows.append(
            f"| {label(key)} | {recs[0]['viewers']:,} | {before / 1e6:,.1f} | {after / 1e6:,.1f} "
            f"| {_spread([per_viewer_bytes(r) for r in recs], _kb)} |"
        )
    return "\n".join(rows)


def stall_ratio(r: Rec) -> float:
    """Healthy viewers' p99 with stalled readers over their p99 without."""
    if r["turn"] is None or r["baseline"] is None:
        return math.nan
    return float(r["turn"]["p99"] / r["baseline"]["p99"])


def stalled_table(records: list[Rec]) -> str:
    """Healthy viewers' latency and server memory without and with stalled readers."""
    rows = [
        "| system | healthy + stalled | p99 ms without | p99 ms with | p99 with/without, "
        "median (min-max) | RSS growth MB without | with | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, recs in _by(records, "stalled").items():
        base = [r["baseline"] for r in recs]
        withs = [r["turn"] for r in recs if r["turn"] is not None]
        grow_a = [(r["rss"]["after"] - r["rss"]["before"]) / 1e6 for r in recs]
        grow_b = [
            (r["rss"]["stalled_after"] - r["rss"]["stalled_before"]) / 1e6
            for r in recs
            if "stalled_after" in r["rss"]
        ]
        ratios = [x for x in (stall_ratio(r) for r in recs) if not math.isnan(x)]
        stalled_n = recs[0]["stalled"]
        notes = _flag_summary([*base, *withs])
        if len(withs) < len(recs):
            notes += f"; fell apart without stalled readers: {len(recs) - len(withs)} round(s)"
        rows.append(
            f"| {label(key)} | {recs[0]['viewers']:,} + {stalled_n} "
            f"| {_spread([t['p99'] for t in base], _ms)} "
            f"| {_spread([t['p99'] for t in withs], _ms)} "
            f"| {_spread(ratios, lambda x: 'lost' if math.isinf(x) else f'{x:.2f}')} "
            f"| {_spread(grow_a, lambda x: f'{x:.1f}')} | {_spread(grow_b, lambda x: f'{x:.1f}')} "
            f"| {notes.strip('; ')} |"
        )
    return "\n".join(rows)


def memory_table(records: list[Rec]) -> str:
    """What the server keeps for readers that never read, after a long fast answer."""
    rows = [
        "| system | stalled readers | sent to each, kB | RSS growth without, MB | with, MB "
        "| kept per stalled reader, kB, median (min-max) | healthy viewer got it all |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for key, recs in _by(records, "memory").items():
        sent = statistics.median(r["baseline"]["frame_bytes"] for r in recs)
        done = sum(1 for r in recs if r["turn"]["complete"])
        without = [(r["rss"]["after"] - r["rss"]["before"]) / 1e6 for r in recs]
        with_ = [(r["rss"]["stalled_after"] - r["rss"]["stalled_before"]) / 1e6 for r in recs]
        rows.append(
            f"| {label(key)} | {recs[0]['stalled']} | {_kb(sent)} "
            f"| {_spread(without, lambda x: f'{x:.1f}')} | {_spread(with_, lambda x: f'{x:.1f}')} "
            f"| {_spread([retained_per_stalled(r) for r in recs], _kb)} "
            f"| {done}/{len(recs)} rounds |"
        )
    return "\n".join(rows)


def _requests(turns: list[Rec]) -> str:
    """Upstream requests per prompt; a turn cut short may end before all of them were made."""
    done = [t["upstream_requests"] for t in turns if t["complete"]]
    counts = done or [t["upstream_requests"] for t in turns]
    shown = f"{min(counts):,}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
    return shown if done else shown + " (turns cut short)"


def requests_table(records: list[Rec]) -> str:
    """Upstream requests per prompt, from the mock's own count."""
    rows = ["| system | viewers | upstream requests per prompt |", "|---|---:|---:|"]
    seen: dict[tuple[str, int], list[Rec]] = {}
    for r in records:
        if r["scenario"] in ("burst", "paced") and r["turn"] is not None:
            seen.setdefault((r["system"], r["viewers"]), []).append(r["turn"])
    order = {key: i for i, key in enumerate(BY_KEY)}
    for (key, viewers), turns in sorted(seen.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        rows.append(f"| {label(key)} | {viewers:,} | {_requests(turns)} |")
    return "\n".join(rows)


def tables(saved: dict[str, Any]) -> str:
    """Every table, for the terminal."""
    records = saved["records"]
    parts = [
        ("Targets", verdicts.table(saved)),
        ("Burst", burst_table(records)),
        ("Paced", paced_table(records)),
        ("Idle memory", idle_table(records)),
        ("Stalled readers", stalled_table(records)),
        ("Memory kept for stalled readers", memory_table(records)),
        ("Upstream requests", requests_table(records)),
    ]
    return "\n\n".join(f"{title}\n\n{body}" for title, body in parts if body.count("\n") > 1)


def one_line(rec: Record) -> str:
    """A progress line for one record."""
    parts = [f"{rec.viewers} viewers"]
    t = rec.turn
    if t is not None:
        d = asdict(t)
        parts += [
            f"{t.rate:,.0f} deliveries/s",
            f"delivered {t.delivered:.1%}",
            f"p50 {_ms(t.p50)} ms p99 {_ms(t.p99)} ms",
            f"CPU server {t.server_cpu:.0%} generator {t.gen_cpu:.0%} mock {t.mock_cpu:.0%}",
            f"cores {t.server_core:.0%}/{t.client_core:.0%}",
            f"upstream requests {t.upstream_requests}",
            *flags(d),
        ]
    if rec.baseline is not None:
        parts.append(f"without stalled: p99 {_ms(rec.baseline.p99)} ms")
    if rec.rss:
        parts.append("RSS " + " ".join(f"{k}={v / 1e6:.1f}MB" for k, v in rec.rss.items()))
    return ", ".join(parts)


def write(path: Path, saved: dict[str, Any]) -> None:
    """Write the markdown report and its charts (next to it)."""
    from .document import render  # it renders these tables: imported late, no cycle

    charts = chart.draw(path.parent, saved["records"])
    path.write_text(render(saved, charts))
