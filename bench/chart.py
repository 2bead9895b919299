"""Charts of a run, as SVG files next to the report (matplotlib, no network)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from .systems import BY_KEY

Rec = dict[str, Any]
BURST_SVG = "bench-burst.svg"
PACED_SVG = "bench-paced.svg"
_COLORS = {key: matplotlib.colormaps["tab10"](i) for i, key in enumerate(BY_KEY)}


def _rate(t: Rec) -> float:
    return float(t["tokens"] / t["receipt_seconds"]) if t["receipt_seconds"] > 0 else 0.0


def _save(fig: Figure, path: Path) -> None:
    # Fixed hash salt and no date: the same results give the same file.
    with matplotlib.rc_context({"svg.hashsalt": "fanout-bench"}):
        fig.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight")


def _thousands(x: float, _pos: object = None) -> str:
    return f"{x:,.0f}"


def burst(path: Path, records: list[Rec]) -> bool:
    """Bars per system: median deliveries/s (whiskers: min and max) and median frames/s."""
    rates: dict[str, list[float]] = {}
    frames: dict[str, list[float]] = {}
    for r in records:
        if r["scenario"] == "burst" and r["turn"]["receipt_seconds"] > 0:
            t = r["turn"]
            rates.setdefault(r["system"], []).append(_rate(t))
            frames.setdefault(r["system"], []).append(t["frames"] / t["receipt_seconds"])
    if not rates:
        return False
    keys = list(rates)
    medians = [statistics.median(rates[k]) for k in keys]
    low = [m - min(rates[k]) for m, k in zip(medians, keys, strict=True)]
    high = [max(rates[k]) - m for m, k in zip(medians, keys, strict=True)]
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.subplots()
    y = [2 * i for i in range(len(keys))]
    colors = [_COLORS[k] for k in keys]
    ax.barh(y, medians, xerr=[low, high], color=colors, capsize=4, label="deliveries/s")
    frame_medians = [statistics.median(frames[k]) for k in keys]
    ax.barh(
        [v + 0.8 for v in y], frame_medians, color=colors, alpha=0.35, hatch="//", label="frames/s"
    )
    ax.set_yticks([v + 0.4 for v in y], [BY_KEY[k].label for k in keys])
    ax.invert_yaxis()
    # Log scale: merging makes fanout's deliveries/s dwarf every frame rate.
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_xlabel("per second, log scale (median; whiskers: min and max of the rounds)")
    viewers = next(r["viewers"] for r in records if r["scenario"] == "burst")
    ax.set_title(f"Burst: {viewers} viewers of one answer, deltas as fast as possible")
    for i, k in enumerate(keys):
        ax.text(max(rates[k]), y[i], f"  {medians[i]:,.0f}", va="center", fontsize=8)
        ax.text(frame_medians[i], y[i] + 0.8, f"  {frame_medians[i]:,.0f}", va="center", fontsize=7)
    ax.set_xlim(min(min(v) for v in frames.values()) / 3, max(max(v) for v in rates.values()) * 6)
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, path)
    return True


def paced(path: Path, records: list[Rec]) -> bool:
    """Lines: median p99 latency per viewer count, per system; lost tokens drawn at the top."""
    steps: dict[str, dict[int, list[Rec]]] = {}
    for r in records:
        if r["scenario"] == "paced":
            steps.setdefault(r["system"], {}).setdefault(r["viewers"], []).append(r["turn"])
    if not steps:
        return False
    ceiling = 30.0  # seconds: where a step that lost tokens is drawn
    fig = Figure(figsize=(7.5, 4))
    ax = fig.subplots()
    for key, by_n in steps.items():
        xs = sorted(by_n)
        ys = [min(statistics.median(t["p99"] for t in by_n[n]), ceiling) * 1000 for n in xs]
        ax.plot(xs, ys, marker="o", label=BY_KEY[key].label, color=_COLORS[key])
        lost = [n for n, y in zip(xs, ys, strict=True) if y >= ceiling * 1000]
        if lost:
            ax.scatter(lost, [ceiling * 1000] * len(lost), marker="x", color="black", zorder=3)
    ax.axhline(100, color="grey", linestyle="--", linewidth=1, label="100 ms target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    all_steps = sorted({n for by_n in steps.values() for n in by_n})
    ax.set_xticks(all_steps, [f"{n:,}" for n in all_steps])
    ax.minorticks_off()
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_xlabel("viewers in the room")
    ax.set_ylabel("p99 fan-out latency, ms (median of rounds)")
    ax.set_title("Paced answers: p99 latency as the room grows (x: tokens lost)")
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def draw(directory: Path, records: list[Rec]) -> dict[str, str]:
    """Draw every chart there is data for; returns {chart: file name}."""
    out = {}
    if burst(directory / BURST_SVG, records):
        out["burst"] = BURST_SVG
    if paced(directory / PACED_SVG, records):
        out["paced"] = PACED_SVG
    return out
