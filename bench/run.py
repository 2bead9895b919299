"""Benchmarks: fanout against its peers, on one server core, the load on the other.

    python -m bench.run            # the full run (what `make bench` runs); rewrites the docs
    python -m bench.run --quick    # a smoke run: tiny numbers, one round, prints only

Every server (fanout and each peer) runs pinned to CPU 0; the mock upstreams and this load
generator share CPU 1. Rounds alternate between systems (A B C ... A B C ...); each
scenario starts a fresh server. docs/benchmarks.md says what is measured and how.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from . import machine, report
from .harness import start_mock
from .procs import CLIENT_CPU, ROOT, pin_self
from .scenarios import FULL, QUICK, SCENARIOS, Mocks, Plan, Record
from .systems import BY_KEY, SYSTEMS, System

RESULTS = ROOT / "bench" / "results.json"
DOC = ROOT / "docs" / "benchmarks.md"


async def run_rounds(plan: Plan, systems: list[System], scenarios: list[str]) -> list[Record]:
    """Every round: each scenario for each system in turn, printing as it goes."""
    pin_self(CLIENT_CPU)
    mocks = Mocks(await start_mock(0.0), await start_mock(plan.paced_rate))
    records: list[Record] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for rnd in range(plan.rounds):
                for name in scenarios:
                    for system in systems:
                        started = time.monotonic()
                        got = await SCENARIOS[name](system, mocks, session, plan, rnd)
                        records.extend(got)
                        took = time.monotonic() - started
                        print(f"round {rnd + 1} {name:8} {system.key:11} {took:5.1f}s", flush=True)
                        for rec in got:
                            print("   ", report.one_line(rec), flush=True)
    finally:
        for mock in (mocks.fast, mocks.paced):
            mock.proc.stop()
    return records


def _payload(plan: Plan, info: dict[str, object], records: list[Record]) -> dict[str, Any]:
    """Everything a report needs, as plain JSON values (inf and nan included)."""
    raw = {
        "plan": dataclasses.asdict(plan),
        "machine": info,
        "records": [dataclasses.asdict(r) for r in records],
    }
    loaded: dict[str, Any] = json.loads(json.dumps(raw))
    return loaded


def main() -> None:
    """Parse the arguments, run the benchmarks, print the tables and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run, prints only")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument(
        "--systems", default=",".join(s.key for s in SYSTEMS), help="comma-separated subset"
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset")
    parser.add_argument(
        "--out", type=Path, help="report to write (default: docs/benchmarks.md; --quick: none)"
    )
    parser.add_argument(
        "--from-results",
        type=Path,
        nargs="?",
        const=RESULTS,
        help="only redraw the report from saved results (default bench/results.json)",
    )
    args = parser.parse_args()
    out: Path | None = args.out or (None if args.quick else DOC)
    if args.from_results:
        report.write(out or DOC, json.loads(args.from_results.read_text()))
        return
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = dataclasses.replace(plan, rounds=args.rounds)
    unknown = {s for s in args.systems.split(",") if s not in BY_KEY}
    unknown |= {s for s in args.scenarios.split(",") if s not in SCENARIOS}
    if unknown:
        parser.error(f"unknown systems or scenarios: {', '.join(sorted(unknown))}")
    systems = [BY_KEY[k] for k in args.systems.split(",")]
    scenarios = args.scenarios.split(",")
    info = machine.describe()
    info["command"] = " ".join(["python -m bench.run", *sys.argv[1:]])
    started = time.monotonic()
    # uvloop runs the load generator only, never a server under test: it is the instrument,
    # and a cheaper event loop lets one core read more frames before it saturates.
    records = uvloop.run(run_rounds(plan, systems, scenarios))
    info.update(machine.after(), seconds=round(time.monotonic() - started))
    saved = _payload(plan, info, records)
    results = None if out is None else RESULTS if out.resolve() == DOC else out.with_suffix(".json")
    if results is not None:  # first: a report that fails to draw never loses the run
        results.write_text(json.dumps(saved, indent=1) + "\n")
    print(report.tables(saved))
    if out is not None:
        report.write(out, saved)
        print(f"wrote {out} and {results}")


if __name__ == "__main__":
    main()
