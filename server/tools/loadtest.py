"""``fanout loadtest``: many WebSocket subscribers over a few rooms, prompts, and a report.

It connects N subscribers spread over R rooms of a running server, sends K prompts per room
(one after another, each once the previous turn ended), then checks that every subscriber
rebuilt every turn exactly as the room's snapshot has it, with no gap or duplicate, and
reports connect times, time to first delta, fan-out skew, delivery lag, inter-delta gaps,
merged deltas and slow-consumer closes. The run is bounded by ``--duration``; only loopback
targets are accepted unless ``--allow-remote`` is given.

Exit codes: 0 the check passed, 1 it failed (or the run hit its time bound), 2 bad options
or a refused target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from server.tools.loadtest_check import check
from server.tools.loadtest_client import Counters, LoadSubscriber, RoomRun
from server.tools.loadtest_report import html_report
from server.tools.loadtest_stats import counts, latency_stats, table, timeline
from server.tools.loadtest_target import HTTP_TIMEOUT, reachable, refusal

DEFAULT_URL = "http://127.0.0.1:8080"
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class LoadtestOptions:
    """What to run; the defaults are the command's."""

    url: str = DEFAULT_URL
    rooms: int = 1
    subscribers: int = 100
    room: str = ""  # room name (a prefix when rooms > 1); empty: a fresh random one
    prompts: int = 1
    prompt: str = "Explain in two sentences why one upstream stream per prompt is enough."
    model: str | None = None
    duration: float = 60.0
    connect_rate: float = 500.0
    slow_fraction: float = 0.0
    slow_stall: float = 3.0
    json_path: Path | None = None
    html_path: Path | None = None
    allow_remote: bool = False
    quiet: bool = False


@dataclass
class LoadtestResult:
    """The exit code, and the report when the run happened."""

    exit_code: int
    report: dict[str, Any] | None = None
    message: str = ""


def _problem_with(opts: LoadtestOptions) -> str | None:
    if opts.subscribers < 1 or opts.rooms < 1 or opts.rooms > opts.subscribers:
        return "need at least one subscriber per room (1 <= --rooms <= --subscribers)"
    if opts.prompts < 0 or opts.duration <= 0 or opts.connect_rate < 0:
        return "--prompts, --connect-rate must not be negative; --duration must be positive"
    if not 0 <= opts.slow_fraction < 1 or opts.slow_stall < 0:
        return "--slow-fraction must be in [0, 1) and --slow-stall not negative"
    return None


def _bases(url: str) -> tuple[str, str]:
    base = url.rstrip("/")
    scheme, rest = base.split("://", 1)
    secure = scheme in ("https", "wss")
    return f"{'https' if secure else 'http'}://{rest}", f"{'wss' if secure else 'ws'}://{rest}"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _is_slow(index: int, fraction: float) -> bool:
    """Every 1/fraction-th subscriber, spread evenly over the indexes (and so the rooms)."""
    return int((index + 1) * fraction) > int(index * fraction)


async def _wait_until(predicate: Any) -> None:
    # Polls many tasks' state at a coarse interval; bounded by the run's deadline.
    while not predicate():  # noqa: ASYNC110
        await asyncio.sleep(POLL_SECONDS)


class _Run:
    """One run's moving parts."""

    def __init__(self, opts: LoadtestOptions, err: TextIO) -> None:
        self.opts = opts
        self.err = err
        self.http, ws_base = _bases(opts.url)
        prefix = opts.room or f"lt-{secrets.token_hex(3)}"
        names = [prefix] if opts.rooms == 1 else [f"{prefix}-{i}" for i in range(opts.rooms)]
        self.rooms = [RoomRun(name, f"{ws_base}/api/rooms/{name}/ws") for name in names]
        self.counters = Counters()
        self.subs = [
            LoadSubscriber(
                i,
                self.rooms[i % opts.rooms],
                self.counters,
                slow_stall=opts.slow_stall if _is_slow(i, opts.slow_fraction) else 0.0,
            )
            for i in range(opts.subscribers)
        ]
        self.turns_done = 0
        self.phase = "connect"
        self.failures: list[str] = []
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def connect_all(self, session: aiohttp.ClientSession) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n, sub in enumerate(self.subs):
            if self.opts.connect_rate:
                delay = start + n / self.opts.connect_rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            self.tasks.append(asyncio.create_task(sub.run(session), name=f"loadtest-{n}"))
        await _wait_until(lambda: all(s.connect_ms is not None or s.gave_up for s in self.subs))

    async def prompt_room(self, session: aiohttp.ClientSession, room: RoomRun) -> None:
        loop = asyncio.get_running_loop()
        body: dict[str, Any] = {"content": self.opts.prompt}
        if self.opts.model:
            body["model"] = self.opts.model
        url = f"{self.http}/api/rooms/{room.name}/prompts"
        for _ in range(self.opts.prompts):
            while True:
                posted = loop.time()
                async with session.post(url, json=body, timeout=HTTP_TIMEOUT) as resp:
                    answer = await resp.json(content_type=None)
                if resp.status == 202:
                    break
                if resp.status != 409:  # another turn streams there: wait for it
                    raise RuntimeError(f"room {room.name}: POST prompts answered {resp.status}")
                await asyncio.sleep(0.25)
            room.posted[answer["turn"]] = posted
            await room.ended(answer["turn"]).wait()
            self.turns_done += 1

    async def fetch_snapshots(self, session: aiohttp.ClientSession) -> None:
        for room in self.rooms:
            url = f"{self.http}/api/rooms/{room.name}"
            async with session.get(url, timeout=HTTP_TIMEOUT) as resp:
                resp.raise_for_status()
                self.snapshots[room.name] = await resp.json()

    def caught_up(self) -> bool:
        return all(
            s.rebuild.seq >= self.snapshots[s.room.name]["seq"]
            for s in self.subs
            if s.connect_ms is not None
        )

    def progress_line(self, elapsed: float) -> str:
        """One line of the progress bar."""
        total = self.opts.prompts * self.opts.rooms
        c = self.counters
        done = c.connected / len(self.subs)
        if total:
            done = (done + self.turns_done / total) / 2
        return (
            f"{self.phase:9} [{'#' * int(done * 24):24}] {elapsed:6.1f}s  "
            f"connected {c.connected}/{len(self.subs)}  turns {self.turns_done}/{total}  "
            f"frames {c.frames:,}  4000s {c.closes_4000}  dropped {c.dropped} "
        )

    async def progress(self) -> None:
        """Redraw the progress bar on a terminal; on anything else, a line now and then."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        tty = self.err.isatty()
        try:
            while True:
                await asyncio.sleep(0.25 if tty else 5.0)
                line = self.progress_line(loop.time() - start)
                print("\r" + line if tty else line, end="" if tty else "\n", file=self.err)
                self.err.flush()
        finally:
            line = self.progress_line(loop.time() - start)
            print("\r" + line if tty else line, file=self.err, flush=True)

    async def phases(self, session: aiohttp.ClientSession) -> None:
        """Connect, prompt, catch up, fetch snapshots; stops at the run's deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.opts.duration
        try:
            async with asyncio.timeout_at(deadline):
                await self.connect_all(session)
                self.phase = "prompts"
                if self.opts.prompts:
                    results = await asyncio.gather(
                        *(self.prompt_room(session, r) for r in self.rooms),
                        return_exceptions=True,
                    )
                    for result in results:
                        if isinstance(result, BaseException):
                            raise result
                else:  # watch: leave a little time for the check
                    await asyncio.sleep(max(0.0, deadline - loop.time() - 2.0))
                self.phase = "catch-up"
                await self.fetch_snapshots(session)
                await _wait_until(self.caught_up)
        except TimeoutError:
            self.failures.append(
                f"the run reached --duration ({self.opts.duration:g} s) during {self.phase}"
            )
        except (aiohttp.ClientError, OSError, RuntimeError, ValueError) as exc:
            self.failures.append(f"{self.phase}: {exc}")
        self.phase = "check"
        try:
            await self.fetch_snapshots(session)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            self.failures.append(f"GET the rooms' snapshots: {exc}")

    def verdict(self) -> int:
        """Collect every subscriber's problems, grouped by reason; returns how many passed."""
        groups: dict[str, list[int]] = {}
        passed = 0
        for sub in self.subs:
            snapshot = self.snapshots.get(sub.room.name)
            if sub.connect_ms is None:
                last = sub.errors[-1] if sub.errors else "no welcome"
                reasons = [f"never connected ({last})"]
            elif snapshot is None:
                reasons = ["no snapshot of its room to check against"]
            else:
                reasons = check(sub.rebuild, snapshot)
            reasons += [e for e in sub.errors if e.startswith("closed by")]
            for reason in reasons:
                groups.setdefault(reason, []).append(sub.index)
            passed += not reasons
        for reason, who in groups.items():
            self.failures.append(f"{len(who)} subscriber(s) (e.g. #{who[0]}): {reason}")
        return passed


async def run_loadtest(
    opts: LoadtestOptions, *, out: TextIO | None = None, err: TextIO | None = None
) -> LoadtestResult:
    """Run the load test and print its report; the entry point of ``fanout loadtest``.

    Args:
        opts: what to run.
        out: where the report table goes (standard output by default).
        err: where the progress bar and refusals go (standard error by default).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    problem = _problem_with(opts) or await refusal(opts.url, opts.allow_remote)
    if problem is not None:
        print(f"fanout loadtest: {problem}", file=err)
        return LoadtestResult(2, message=problem)
    loop = asyncio.get_running_loop()
    run = _Run(opts, err)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        problem = await reachable(session, run.http)
        if problem is not None:
            print(f"fanout loadtest: {problem}", file=err)
            return LoadtestResult(2, message=problem)
        started_at, start, cpu = time.time(), loop.time(), _cpu_seconds()
        ticker = None if opts.quiet else asyncio.create_task(run.progress())
        await run.phases(session)
        end = loop.time()
        passed = run.verdict()
        await asyncio.gather(*(s.stop() for s in run.subs))
        for task in run.tasks:
            task.cancel()
        await asyncio.gather(*run.tasks, return_exceptions=True)
    if ticker is not None:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
    report: dict[str, Any] = {
        "version": 1,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "started_at": started_at,
        "wall_seconds": end - start,
        "client_cpu_seconds": _cpu_seconds() - cpu,
        "latency": latency_stats(run.subs),
        "counts": counts(run.subs, start, end),
        "timeline": timeline(run.subs, start, end),
        "prompt_offsets": sorted(t - start for r in run.rooms for t in r.posted.values()),
        "rooms": [
            {
                "name": r.name,
                "seq": run.snapshots.get(r.name, {}).get("seq"),
                "turns": len(r.posted),
            }
            for r in run.rooms
        ],
        "checked": passed,
        "turns": sum(len(r.posted) for r in run.rooms),
        "failures": run.failures,
        "ok": not run.failures,
    }
    print(table(report), file=out)
    if opts.json_path is not None:
        opts.json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if opts.html_path is not None:
        opts.html_path.write_text(html_report(report), encoding="utf-8")
    return LoadtestResult(0 if report["ok"] else 1, report)


def add_parser(sub: Any) -> None:
    """Register ``loadtest`` on the CLI's subcommands."""
    d = LoadtestOptions()
    p = sub.add_parser(
        "loadtest",
        help="load-test a running server with many WebSocket subscribers",
        description="Connect N subscribers spread over R rooms of a running server, send "
        "prompts, and report latencies, merges and slow-consumer closes; exits 1 unless every "
        "subscriber rebuilt every turn exactly. Loopback targets only, unless --allow-remote.",
    )
    p.add_argument("--url", default=d.url, help=f"server URL (default {d.url})")
    p.add_argument("--rooms", type=int, default=d.rooms, help="rooms (default 1)")
    p.add_argument("--subscribers", type=int, default=d.subscribers, help="in all (default 100)")
    p.add_argument("--room", default=d.room, help="room name, or prefix (default: random)")
    p.add_argument("--prompts", type=int, default=d.prompts, help="per room (default 1)")
    p.add_argument("--prompt", default=d.prompt, help="the prompt's text")
    p.add_argument("--model", default=None, help="model (default: the server's)")
    p.add_argument(
        "--duration",
        "--timeout",
        type=float,
        default=d.duration,
        help="hard bound on the run in seconds; with --prompts 0, how long to watch (default 60)",
    )
    p.add_argument(
        "--connect-rate", type=float, default=d.connect_rate, help="per second, 0 = all at once"
    )
    p.add_argument(
        "--slow-fraction",
        type=float,
        default=d.slow_fraction,
        help="share of subscribers that stop reading at their first delta (default 0)",
    )
    p.add_argument(
        "--slow-stall", type=float, default=d.slow_stall, help="how long they stop (default 3 s)"
    )
    p.add_argument("--json", type=Path, dest="json_path", help="write the report as JSON here")
    p.add_argument("--html", type=Path, dest="html_path", help="write an HTML report here")
    p.add_argument(
        "--allow-remote", action="store_true", help="allow a target that is not loopback"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    """``fanout loadtest`` from parsed arguments."""
    names = set(LoadtestOptions.__dataclass_fields__)
    opts = LoadtestOptions(**{k: v for k, v in vars(args).items() if k in names})
    return asyncio.run(run_loadtest(opts)).exit_code
