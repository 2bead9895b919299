"""The self-contained HTML report of ``fanout loadtest``: tables and inline SVG charts.

No scripts, fonts or other files: the page opens from disk anywhere.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from server.tools.loadtest_stats import ROWS

WIDTH, HEIGHT = 760, 340
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 20, 44
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
FLOOR_MS = 0.01  # a log axis needs a floor: the first receiver of a seq lags by 0 ms

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:820px;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
td,th{padding:.25rem .7rem;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}
.ok{color:#217a2b;font-weight:600}.bad{color:#b3261e;font-weight:600}
svg{background:#fafafa;border:1px solid #e3e3e3}
svg text{font:12px system-ui,sans-serif;fill:#444}
"""


def _x_log(value: float, lo: float, hi: float) -> float:
    span = math.log10(hi) - math.log10(lo)
    return LEFT + (math.log10(max(value, lo)) - math.log10(lo)) / span * (WIDTH - LEFT - RIGHT)


def _y(fraction: float) -> float:
    return HEIGHT - BOTTOM - fraction * (HEIGHT - TOP - BOTTOM)


def _nice(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value``."""
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= value)


def _frame(x_label: str, y_label: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img">',
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" '
        'stroke="#888"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="#888"/>',
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 8}" text-anchor="middle">'
        f"{escape(x_label)}</text>",
        f'<text x="14" y="{(TOP + HEIGHT - BOTTOM) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(TOP + HEIGHT - BOTTOM) / 2})">{escape(y_label)}</text>',
    ]


def cdf_svg(latency: dict[str, Any]) -> str:
    """Latency CDFs on a log-scale millisecond axis, one line per measure."""
    series = [(label, latency[key]["cdf"]) for key, label in ROWS if latency[key]["cdf"]]
    values = [v for _, cdf in series for v in cdf]
    hi = 10 ** math.ceil(math.log10(max([*values, 1.0]) * 1.0001))
    lo = min(FLOOR_MS, hi / 1000)
    out = _frame("milliseconds (log scale)", "fraction of samples")
    decade = lo
    while decade <= hi * 1.0001:
        x = _x_log(decade, lo, hi)
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM}" stroke="#e6e6e6"/>'
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{decade:g}</text>'
        )
        decade *= 10
    for fraction in (0.0, 0.5, 0.9, 0.99):
        y = _y(fraction)
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#e6e6e6"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{fraction:g}</text>'
        )
    for n, (label, cdf) in enumerate(series):
        colour = COLOURS[n % len(COLOURS)]
        points = " ".join(
            f"{_x_log(v, lo, hi):.1f},{_y((i + 1) / len(cdf)):.1f}" for i, v in enumerate(cdf)
        )
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        out.append(
            f'<rect x="{LEFT + 12}" y="{TOP + 8 + 18 * n}" width="14" height="4" fill="{colour}"/>'
            f'<text x="{LEFT + 32}" y="{TOP + 14 + 18 * n}">{escape(label)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def timeline_svg(tl: dict[str, Any], marks: list[float]) -> str:
    """Frames delivered per second over the run, with the prompts marked."""
    rates = tl["per_second"]
    width = tl["bin_s"]
    total = width * len(rates)
    top = _nice(max([*rates, 1.0]))
    plot_w = WIDTH - LEFT - RIGHT
    out = _frame("seconds since the start", "frames delivered per second")
    for i in range(5):
        fraction = i / 4
        y = _y(fraction)
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#e6e6e6"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{top * fraction:,.0f}</text>'
        )
    step = _nice(total / 8) if total > 0 else 1.0
    tick = 0.0
    while tick <= total + 1e-9:
        x = LEFT + tick / total * plot_w if total else LEFT
        out.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{tick:g}</text>'
        )
        tick = round(tick + step, 9)
    bar = plot_w / max(len(rates), 1)
    for i, rate in enumerate(rates):
        h = rate / top * (HEIGHT - TOP - BOTTOM)
        out.append(
            f'<rect x="{LEFT + i * bar:.1f}" y="{HEIGHT - BOTTOM - h:.1f}" '
            f'width="{max(bar - 0.5, 0.5):.1f}" height="{h:.1f}" fill="{COLOURS[0]}"/>'
        )
    for mark in marks:
        if 0 <= mark <= total:
            x = LEFT + mark / total * plot_w
            out.append(
                f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM}" '
                'stroke="#d62728" stroke-dasharray="4 3"><title>prompt</title></line>'
            )
    out.append("</svg>")
    return "\n".join(out)


def html_report(report: dict[str, Any]) -> str:
    """The whole page."""
    opts = report["options"]
    c = report["counts"]
    rows = "".join(
        f"<tr><td>{escape(label)}</td>"
        + "".join(
            f"<td>{report['latency'][key][f]:,.2f}</td>" for f in ("p50", "p90", "p99", "max")
        )
        + f"<td>{report['latency'][key]['n']:,}</td></tr>"
        for key, label in ROWS
    )
    verdict = (
        '<p class="ok">Check passed: every subscriber rebuilt every turn exactly, '
        "no gap or duplicate.</p>"
        if report["ok"]
        else '<p class="bad">Check failed:</p><ul>'
        + "".join(f"<li>{escape(r)}</li>" for r in report["failures"][:200])
        + "</ul>"
    )
    facts = [
        ("target", opts["url"]),
        ("subscribers", f"{opts['subscribers']:,} in {opts['rooms']} room(s)"),
        ("prompts per room", str(opts["prompts"])),
        ("wall time", f"{report['wall_seconds']:.2f} s"),
        ("client CPU", f"{report['client_cpu_seconds']:.2f} s"),
        ("deliveries", f"{c['frames']:,} frames ({c['frames_per_second']:,.0f}/s)"),
        ("merged deltas", f"{c['merged_frames']:,} frames covering {c['merged_seqs']:,} seqs"),
        ("slow readers", f"{c['slow_subscribers']} stalled"),
        ("closes 4000 / dropped", f"{c['closes_4000']} / {c['dropped']}"),
        (
            "resumed",
            f"{c['resumed_recovered']} recovered, {c['resumed_snapshot']} from a snapshot",
        ),
    ]
    fact_rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in facts)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fanout loadtest</title>
<style>{STYLE}</style></head><body>
<h1>fanout loadtest</h1>
{verdict}
<table>{fact_rows}</table>
<h2>Latencies (ms)</h2>
<table><tr><th></th><th>p50</th><th>p90</th><th>p99</th><th>max</th><th>n</th></tr>{rows}</table>
<p>Fan-out skew: per seq, from the first to the last subscriber that got it. Delivery lag: each
delivery after the first subscriber got the same seq. First delta: from the prompt's POST.
Slow readers are left out of latencies.</p>
<h2>Latency CDF</h2>
{cdf_svg(report["latency"])}
<h2>Deliveries over time</h2>
{timeline_svg(report["timeline"], report["prompt_offsets"])}
</body></html>
"""
