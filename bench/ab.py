"""A/B: this checkout's fanout against another checkout's, in one run, round by round.

    python -m bench.ab --baseline CHECKOUT           # writes bench/ab.json and its section
                                                     # of docs/benchmarks.md
    python -m bench.ab --baseline CHECKOUT --quick   # a smoke run, prints only

The two servers run with the same interpreter, packages, mock upstreams and load generator,
alternating within every round (burst, paced, idle), so only the code differs. A figure that
moves as much between rounds of one system as between the systems is noise, not a change: the
section gives every round and the medians.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import statistics
import textwrap
from pathlib import Path
from typing import Any

import uvloop

from . import machine
from .procs import ROOT
from .report import per_viewer_bytes, rate
from .run import run_rounds
from .scenarios import FULL, QUICK
from .sections import splice
from .systems import FANOUT, baseline

RESULTS = ROOT / "bench" / "ab.json"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- ab:begin -->"
END = "<!-- ab:end -->"
SCENARIOS = ["burst", "paced", "idle"]
ROUNDS = 4

Rec = dict[str, Any]


def _figures(records: list[Rec], system: str) -> dict[str, list[float]]:
    """Per round: burst deliveries/s, p99 ms at the largest paced step, idle kB per viewer."""
    mine = [r for r in records if r["system"] == system]
    top = max((r["viewers"] for r in mine if r["scenario"] == "paced"), default=0)
    return {
        "burst": [rate(r["turn"]) for r in mine if r["scenario"] == "burst" and r["turn"]],
        "paced": [
            r["turn"]["p99"] * 1000
            for r in mine
            if r["scenario"] == "paced" and r["viewers"] == top and r["turn"]
        ],
        "idle": [per_viewer_bytes(r) / 1000 for r in mine if r["scenario"] == "idle"],
    }


ROWS = (
    ("burst", "burst, deliveries/s (higher is better)", "{:,.0f}"),
    ("paced", "paced, p99 ms at the largest step (lower is better)", "{:.0f}"),
    ("idle", "idle, kB per viewer (lower is better)", "{:.1f}"),
)


def section(saved: dict[str, Any]) -> str:
    """The A/B section of docs/benchmarks.md."""
    records, info = saved["records"], saved["machine"]
    ours, theirs = _figures(records, "fanout"), _figures(records, "baseline")
    lines = [
        f"| measure | fanout at {info.get('revision', '?')}, per round | median "
        f"| fanout at {saved['baseline']}, per round | median | ratio of medians |",
        "|---|---|---:|---|---:|---:|",
    ]
    for key, title, fmt in ROWS:
        a, b = ours[key], theirs[key]
        if not a or not b:
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        lines.append(
            f"| {title} | {', '.join(fmt.format(x) for x in a)} | {fmt.format(ma)} "
            f"| {', '.join(fmt.format(x) for x in b)} | {fmt.format(mb)} | {ma / mb:.2f} |"
        )
    paced_top = max((r["viewers"] for r in records if r["scenario"] == "paced"), default=0)
    intro = (
        f"`python -m bench.ab --baseline CHECKOUT` on {info.get('date', '?')}: the fanout of "
        f"this commit and of commit {saved['baseline']}, alternating within each of "
        f"{saved['plan']['rounds']} rounds, with the same interpreter, packages, mock upstreams "
        f"and load generator. Burst: {saved['plan']['burst_viewers']:,} viewers; paced: up to "
        f"{paced_top:,} viewers at {saved['plan']['paced_rate']:g} tokens/s; idle: "
        f"{saved['plan']['idle_viewers']:,} viewers."
    )
    table = "\n".join(lines)
    return (
        f"{BEGIN}\n## A/B: this code against an earlier checkout\n\n"
        f"{textwrap.fill(intro, 92)}\n\n{table}\n{END}\n"
    )


def saved_section() -> str:
    """The section drawn from bench/ab.json, or nothing when there is no such file."""
    return section(json.loads(RESULTS.read_text())) if RESULTS.is_file() else ""


def main() -> None:
    """Run both checkouts, print the section and (full run) write the JSON and the doc."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, metavar="CHECKOUT")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--quick", action="store_true", help="tiny numbers, prints only")
    args = parser.parse_args()
    if not (args.baseline / "server" / "__main__.py").is_file():
        parser.error(f"--baseline: {args.baseline} is not a checkout of fanout")
    other = baseline(args.baseline)
    plan = dataclasses.replace(QUICK if args.quick else FULL, rounds=args.rounds)
    info = machine.describe()
    info["date"] = datetime.date.today().isoformat()
    records = uvloop.run(run_rounds(plan, [FANOUT, other], SCENARIOS))
    saved = {
        "plan": dataclasses.asdict(plan),
        "machine": {**info, **machine.after()},
        "baseline": other.label.removeprefix("fanout at "),
        "records": json.loads(json.dumps([dataclasses.asdict(r) for r in records])),
    }
    print(section(saved))
    if not args.quick:
        RESULTS.write_text(json.dumps(saved, indent=1) + "\n")
        DOC.write_text(splice(DOC.read_text(), section(saved), BEGIN, END))
        print(f"wrote {DOC} and {RESULTS}")


if __name__ == "__main__":
    main()
