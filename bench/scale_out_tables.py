"""Scale-out records (as saved in bench/scale_out.json) to table rows and progress lines."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable
from typing import Any

from .scale_out_setups import BY_KEY

SATURATED = 0.90  # a generator (process or core) this busy limits what it measures
SHARED = 0.10  # more of CPU 0 than this went to processes outside the deployment


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if math.isinf(seconds):
        return "lost"
    return f"{seconds * 1000:,.0f}" if seconds >= 0.1 else f"{seconds * 1000:,.1f}"


def _spread(values: list[float], fmt: Callable[[float], str]) -> str:
    """``median (min-max)``, or the one value."""
    if len(values) < 2:
        return fmt(values[0]) if values else "-"
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def _flags(rec: dict[str, Any], redis_cpu: int) -> list[str]:
    """Why a turn's numbers may not be the deployment's alone, or what went wrong."""
    cpu, check = rec["cpu"], rec["check"]
    ours = sum(cpu["instances"]) + cpu["softirq0"] + (cpu["redis"] if redis_cpu == 0 else 0)
    out = []
    if cpu["generator"] >= SATURATED:
        out.append("generator saturated")
    elif cpu["core1"] >= SATURATED:
        out.append("CPU 1 full")
    if cpu["core0"] - ours >= SHARED:
        out.append("CPU 0 shared")
    if not rec["complete"]:
        out.append(f"incomplete ({rec['delivered'] / max(rec['expected'], 1):.0%})")
    if check["gaps"] or check["texts"] != 1 or list(check["statuses"]) != ["completed"]:
        out.append(f"{check['gaps']} viewers with gaps, {check['texts']} texts")
    if rec["lost_connections"]:
        out.append(f"{rec['lost_connections']} connections lost")
    if rec["log_lines"]:
        out.append(f"{rec['log_lines']} log lines")
    red = rec.get("redis")
    if red is None:
        return out
    watched = BY_KEY[rec["setup"]].watched
    if {red["numsub_before"], red["numsub_after"]} != {watched}:
        out.append(f"subscribers {red['numsub_before']}-{red['numsub_after']}, not {watched}")
    if round(red["copies_from_bytes"]) != red["numsub_after"]:
        out.append(f"{red['copies_from_bytes']:.2f} copies")
    if red["catch_up_reads"]:
        out.append(f"{red['catch_up_reads']} catch-up reads")
    if check["events"] != red["events"]:
        out.append(f"viewers saw {check['events']} of {red['events']} events")
    heard = rec["events_heard"]
    want = [red["events"] if n else 0 for n in rec["viewers_per_instance"]]
    if None not in heard and heard != want:
        out.append(f"events heard {heard}, not {want}")
    return out


def _per_cpu_second(rec: dict[str, Any]) -> float:
    """Deliveries per CPU-second of the deployment's processes (the instances and Redis).

    What the work cost, whoever else used CPU 0 meanwhile.
    """
    cpu = rec["cpu"]
    used = (sum(cpu["instances"]) + cpu["redis"]) * cpu["wall"]
    return float(rec["delivered"] / used) if used > 0 else 0.0


def _groups(records: list[dict[str, Any]], mode: str) -> list[list[dict[str, Any]]]:
    """Records of ``mode`` by viewers then setup (the order of the run)."""
    out: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for rec in records:
        if rec["mode"] == mode:
            out.setdefault((rec["viewers"], rec["setup"]), []).append(rec)
    return list(out.values())


def _count(values: list[Any]) -> str:
    """``3`` when every round agrees, else each round's value."""
    return str(values[0]) if len(set(map(str, values))) == 1 else "/".join(map(str, values))


def deliveries_table(records: list[dict[str, Any]], mode: str, redis_cpu: int) -> str:
    """What the viewers received, per viewer count and setup.

    (a burst's rate, a paced answer's latency).
    """
    burst = mode == "burst"
    head = (
        "deliveries/s, median (min-max) | per CPU-second | frames/s | p99 ms"
        if burst
        else "p50 ms | p99 ms"
    )
    rows = [
        f"| viewers | setup | {head}, median (min-max) | p99 ms, producer's instance / "
        "others | viewers whole, one text | upstream requests | CPU: instances / Redis / "
        "generator | notes |",
        f"|---:|---|{'---:|' * (3 if burst else 2)}---:|---:|---:|---:|---|",
    ]
    med = statistics.median
    for recs in _groups(records, mode):
        first, cpu = recs[0], [r["cpu"] for r in recs]
        notes = Counter(flag.split(" (")[0] for r in recs for flag in _flags(r, redis_cpu))
        whole = sum(r["check"]["whole"] for r in recs)
        one_text = all(r["check"]["texts"] == 1 for r in recs)
        if burst:
            rate = _spread([r["rate"] for r in recs], lambda x: f"{x:,.0f}")
            frames = med(r["frames"] / max(r["receipt_seconds"], 1e-9) for r in recs)
            per_cpu = med(_per_cpu_second(r) for r in recs)
            figures = f"{rate} | {per_cpu:,.0f} | {frames:,.0f}"
        else:
            figures = _ms(med(r["p50"] for r in recs))
        rows.append(
            f"| {first['viewers']:,} | {BY_KEY[first['setup']].label} | {figures} "
            f"| {_spread([r['p99'] for r in recs], _ms)} "
            f"| {_ms(med(r['p99_producer'] for r in recs))} / "
            f"{_ms(med(r['p99_others'] for r in recs))} "
            f"| {whole:,}/{sum(r['viewers'] for r in recs):,}, {'yes' if one_text else 'NO'} "
            f"| {_count([r['requests'] for r in recs])} "
            f"| {med(sum(c['instances']) for c in cpu):.0%} / {med(c['redis'] for c in cpu):.0%}"
            f" / {max(c['generator'] for c in cpu):.0%} "
            f"| {'; '.join(f'{k} {n}/{len(recs)}' for k, n in notes.items())} |"
        )
    return "\n".join(rows)


def redis_table(records: list[dict[str, Any]]) -> str:
    """What Redis did per measured turn, both answers."""
    rows = [
        "| answer | viewers | setup | events per turn | XADD = PUBLISH = events "
        "| channel subscribers | messages per event | copies, from output bytes "
        "| catch-up reads | events heard: instances with viewers / without |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode in ("burst", "paced"):
        for recs in _groups(records, mode):
            shared = [r for r in recs if "redis" in r]
            if not shared:
                continue
            reds = [r["redis"] for r in shared]
            events = [x["events"] for x in reds]
            same = sum(x["xadd"] == x["publish"] == x["events"] for x in reds)
            first = shared[0]
            rows.append(
                f"| {mode} | {first['viewers']:,} | {BY_KEY[first['setup']].label} "
                f"| {_spread(events, lambda v: f'{v:,.0f}')} | {same}/{len(reds)} "
                f"| {_count([x['numsub_after'] for x in reds])} "
                f"| {_count([x['messages_per_event'] for x in reds])} "
                f"| {_spread([x['copies_from_bytes'] for x in reds], lambda v: f'{v:.2f}')} "
                f"| {sum(x['catch_up_reads'] for x in reds)} | {_heard(shared)} |"
            )
    return "\n".join(rows)


def _heard(recs: list[dict[str, Any]]) -> str:
    """What the instances' own counts say, over the rounds."""
    if any(None in r["events_heard"] for r in recs):
        return "not exposed"
    watched = {h == r["redis"]["events"] for r in recs for h, n in _zipped(r) if n}
    unwatched = {h for r in recs for h, n in _zipped(r) if not n}
    left = "every event" if watched == {True} else "NOT every event"
    right = "-" if not unwatched else ("none" if unwatched == {0} else "SOME")
    return f"{left} / {right}"


def _zipped(rec: dict[str, Any]) -> list[tuple[int, int]]:
    """Each instance's events heard with its viewer count."""
    return list(zip(rec["events_heard"], rec["viewers_per_instance"], strict=True))


def one_line(rec: dict[str, Any], redis_cpu: int) -> str:
    """One line about one measured turn."""
    if "error" in rec:
        return f"FAILED: {rec['error']}; " + " | ".join(rec["log"][:5])
    red, check = rec.get("redis"), rec["check"]
    line = (
        f"{rec['rate']:,.0f} deliveries/s, p50 {_ms(rec['p50'])} p99 {_ms(rec['p99'])} ms, "
        f"{check['whole']}/{rec['viewers']} whole, {check['texts']} text(s), "
        f"{rec['requests']} upstream request(s), CPU instances "
        f"{sum(rec['cpu']['instances']):.0%} redis {rec['cpu']['redis']:.0%} "
        f"generator {rec['cpu']['generator']:.0%}"
    )
    if red:
        line += (
            f"; {red['events']} events x {red['numsub_after']} subscribers, copies from bytes "
            f"{red['copies_from_bytes']:.2f}, heard {rec['events_heard']}"
        )
    flags = _flags(rec, redis_cpu)
    return line + (f" [{'; '.join(flags)}]" if flags else "")
