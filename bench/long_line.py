"""Long upstream lines: the SSE decoder's time grows with the line, not with its square.

    python -m bench.long_line           # writes bench/long_line.json and its section of
                                        # docs/benchmarks.md
    python -m bench.long_line --quick   # smaller lines, fewer runs, prints only

One ``data:`` line of N MiB with no line break until its end is fed to ``SSEDecoder`` 16 KiB
at a time, as reads from a socket arrive, with the line limit off (``upstream.max_line_bytes =
0``) and on (its default, 8 MiB, against a 100 MiB line). Measured, as the median of several
runs: the seconds to decode the line, per MiB, and the slowest single ``feed`` (what a read
holds the event loop for, so what ``/healthz`` and every viewer wait behind). Linear means the
seconds per MiB stay flat as N grows; the decoder before the fix copied and searched the whole
unfinished line on every read (about 20 s for 64 MiB in the integration test of the time).
The decoder is sans-I/O: this runs it in-process, no server, no sockets.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import textwrap
import time
from typing import Any

from server.config import Config
from server.core.sse import LineTooLong, SSEDecoder

from . import machine
from .procs import ROOT
from .sections import splice

RESULTS = ROOT / "bench" / "long_line.json"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- long-line:begin -->"
END = "<!-- long-line:end -->"
READ = 16 * 1024
MIB = 1024 * 1024
FULL = {"sizes": [4, 8, 16, 32, 64], "runs": 5, "limited_mib": 100}
QUICK = {"sizes": [1, 2, 4], "runs": 2, "limited_mib": 12}


def _decode(mib: int, limit: int) -> dict[str, Any]:
    """Feed one line of ``mib`` MiB (a JSON chunk padded with spaces) 16 KiB at a time."""
    decoder = SSEDecoder(limit)
    piece = b" " * READ
    head, tail = b'data: {"choices":[{"index":0,"delta":{"content":"x"}', b"}]}\n\n"
    slowest, events, fed, refused = 0.0, 0, 0, False
    began = time.perf_counter()
    for data in (head, *([piece] * (mib * MIB // READ)), tail):
        start = time.perf_counter()
        try:
            events += len(decoder.feed(data))
        except LineTooLong:
            refused = True
            slowest = max(slowest, time.perf_counter() - start)
            break
        slowest = max(slowest, time.perf_counter() - start)
        fed += len(data)
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "slowest_feed": slowest,
        "events": events,
        "fed": fed,
        "refused": refused,
    }


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def measure(plan: dict[str, Any]) -> dict[str, Any]:
    """Every size with the limit off, then the long line against the default limit."""
    rows = []
    for mib in plan["sizes"]:
        runs = [_decode(mib, 0) for _ in range(plan["runs"])]
        assert all(r["events"] == 1 for r in runs), "the line was not decoded whole"
        rows.append(
            {
                "mib": mib,
                "seconds": _median(runs, "seconds"),
                "slowest_feed": _median(runs, "slowest_feed"),
            }
        )
    limit = Config().upstream.max_line_bytes
    runs = [_decode(plan["limited_mib"], limit) for _ in range(plan["runs"])]
    assert all(r["refused"] for r in runs), "the default limit did not refuse the line"
    limited = {
        "mib": plan["limited_mib"],
        "limit": limit,
        "seconds": _median(runs, "seconds"),
        "slowest_feed": _median(runs, "slowest_feed"),
        "read_mib": runs[0]["fed"] / MIB,
    }
    return {"rows": rows, "limited": limited}


def section(saved: dict[str, Any]) -> str:
    """The markdown section, between its markers."""
    rows, limited = saved["rows"], saved["limited"]
    lines = ["| line | seconds | per MiB | slowest read |", "|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['mib']} MiB | {r['seconds']:.3f} | {r['seconds'] / r['mib'] * 1000:.2f} ms"
            f" | {r['slowest_feed'] * 1000:.2f} ms |"
        )
    first, last = rows[0], rows[-1]
    growth = (last["seconds"] / last["mib"]) / (first["seconds"] / first["mib"])
    verdict = "linear" if growth < 2 else "NOT linear"
    when = saved["machine"].get("date", "")
    intro = (
        f"`python -m bench.long_line` ({when}, {saved['plan']['runs']} runs each, medians): one "
        "upstream `data:` line with no line break until its end, fed to the SSE decoder 16 KiB "
        f"per read. With the line limit off, the time per MiB at {last['mib']} MiB is "
        f"{growth:.2f}x that at {first['mib']} MiB: **{verdict}** (the decoder before issue 12 "
        "searched the whole unfinished line on every read: quadratic, about 20 s for 64 MiB). "
        "The slowest read is the last one, which decodes the whole line once; every other read "
        "only appends."
    )
    refused = (
        f"With the default `upstream.max_line_bytes` ({limited['limit'] // MIB} MiB), a "
        f"{limited['mib']} MiB line is refused after {limited['read_mib']:.1f} MiB were read, "
        f"in {limited['seconds']:.3f} s (slowest read {limited['slowest_feed'] * 1000:.2f} ms): "
        "the turn ends `failed` `bad_chunk` and the upstream connection is closed."
    )
    table = "\n".join(lines)
    return (
        f"{BEGIN}\n## Long upstream lines\n\n{textwrap.fill(intro, 92)}\n\n{table}\n\n"
        f"{textwrap.fill(refused, 92)}\n{END}\n"
    )


def saved_section() -> str:
    """The section drawn from bench/long_line.json, or nothing when there is no such file."""
    return section(json.loads(RESULTS.read_text())) if RESULTS.is_file() else ""


def main() -> None:
    """Measure, print, and (full run) write the JSON and the doc's section."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller lines, prints only")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    info = machine.describe()
    info["date"] = datetime.date.today().isoformat()
    saved = {"plan": plan, "machine": info, **measure(plan)}
    print(section(saved))
    if not args.quick:
        RESULTS.write_text(json.dumps(saved, indent=1) + "\n")
        DOC.write_text(splice(DOC.read_text(), section(saved), BEGIN, END))
        print(f"wrote {DOC} and {RESULTS}")


if __name__ == "__main__":
    main()
