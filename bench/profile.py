"""Where fanout's server spends its CPU during an answer: py-spy profiles, summarised.

    python -m bench.profile                                        # the default two answers
    python -m bench.profile --rate 80 --viewers 2000 --tokens 200  # one answer of your choice

Starts the mock upstream and fanout as the benchmarks do (fanout on CPU 0), attaches py-spy
(on CPU 1) to the server for one answer, then writes bench/profile.md: the share of samples
per area (fanout, aiohttp, asyncio, json, ...) and the top functions by own and total time.
By default it profiles a paced answer to 5,000 viewers (200 tokens at 80 tokens/s: the
paced target) and a burst long enough to sample (500 viewers, 20,000 deltas, flat out).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import aiohttp
import uvloop

from .harness import Deployment, start_mock
from .procs import CLIENT_CPU, ROOT, pin_self, pinning
from .systems import FANOUT

OUT = ROOT / "bench" / "profile.md"
_AREAS = (
    ("server/", "fanout (server/)"),
    ("aiohttp/", "aiohttp"),
    ("asyncio/", "asyncio"),
    ("json/", "json"),
    ("openai/", "openai SDK"),
    ("httpx", "openai SDK"),
    ("pydantic", "openai SDK"),
    ("logging/", "logging"),
    ("<string>", "dataclass __init__ (generated code)"),
)


def _short(frame: str) -> str:
    """``function (file.py:12)`` -> ``function (area/file.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            path = path.split("/", 1)[1] if marker == "/lib/python3." else path
            break
    return f"{name} ({path})"


def _area(short: str) -> str:
    path = short.rsplit(" (", 1)[-1]
    for marker, area in _AREAS:
        if path.startswith(marker):
            return area
    return "other"


# Frames every sample has (interpreter start-up, the event loop): they say nothing.
_FRAMEWORK = (
    "<module> ",
    "_run_code ",
    "_run_module_as_main ",
    "run_app ",
    "main (server/cli.py)",
    "BaseEventLoop.",
    "Handle._run ",
)


def summarize(raw: Path, viewers: int, tokens: int, rate: float) -> str:
    """The markdown summary of a py-spy raw (collapsed stacks) file."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        samples += n
        leaf = _short(frames[-1])
        own[leaf] += n
        areas[_area(leaf)] += n
        for name in {_short(f) for f in frames}:
            if not name.startswith(_FRAMEWORK):
                total[name] += n
    if not samples:
        return "py-spy recorded no samples.\n"

    def table(counter: Counter[str], head: str, k: int) -> str:
        rows = [f"| {head} | share of samples |", "|---|---:|"]
        rows += [f"| `{name}` | {n / samples:.1%} |" for name, n in counter.most_common(k)]
        return "\n".join(rows)

    date = datetime.date.today().isoformat()
    pace = f"at {rate:g} tokens/s" if rate else "as fast as the mock writes (the burst)"
    return (
        f"Profile of the fanout server during one answer of {tokens} deltas to {viewers} "
        f"viewers, {pace}: {samples:,} py-spy samples of the server's busy thread, {date}. "
        f"`python -m bench.profile --rate {rate:g} --viewers {viewers} --tokens {tokens}` "
        "writes it.\n\n"
        f"{table(areas, 'where the CPU was (own time, by file)', 10)}\n\n"
        f"{table(own, 'function (own time)', 10)}\n\n"
        f"{table(total, 'function (own + callees; event loop frames left out)', 12)}\n"
    )


async def _profile(viewers: int, tokens: int, rate: float, raw: Path) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    pin_self(CLIENT_CPU)
    mock = await start_mock(rate)
    try:
        async with aiohttp.ClientSession() as session, Deployment(FANOUT, mock, session) as d:
            await d.grow(viewers)
            await d.turn("mock-stamp-20", 20, 30.0, 10.0)
            pin = ["taskset", "-c", str(CLIENT_CPU)] if pinning() else []
            args = ["record", "--pid", str(d.proc.pid), "--rate", "250", "--format", "raw"]
            recorder = await asyncio.create_subprocess_exec(
                *pin,
                spy,
                *args,
                "--nonblocking",
                "--output",
                str(raw),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await asyncio.sleep(1.0)  # let py-spy attach
            turn = await d.turn(f"mock-stamp-{tokens}", tokens, 120.0, 5.0)
            recorder.send_signal(signal.SIGINT)
            await asyncio.wait_for(recorder.wait(), 30)
            print(
                f"{turn.rate:,.0f} deliveries/s, p99 {turn.p99 * 1000:,.0f} ms, "
                f"server CPU {turn.server_cpu:.0%}"
            )
    finally:
        mock.proc.stop()


DEFAULT_RUNS = ((5000, 200, 80.0), (500, 20000, 0.0))


def main() -> None:
    """Profile the default answers (or the one given) and write bench/profile.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int)
    parser.add_argument("--tokens", type=int)
    parser.add_argument("--rate", type=float, help="tokens/s (0: as fast as possible)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    runs: tuple[tuple[int, int, float], ...] = DEFAULT_RUNS
    if args.viewers or args.tokens or args.rate is not None:
        runs = ((args.viewers or 500, args.tokens or 2000, args.rate or 0.0),)
    summaries = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (viewers, tokens, rate) in enumerate(runs):
            raw = Path(tmp) / f"profile-{i}.txt"
            uvloop.run(_profile(viewers, tokens, rate, raw))
            summaries.append(summarize(raw, viewers, tokens, rate))
    summary = "\n".join(summaries)
    args.out.write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
