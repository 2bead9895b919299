"""Scale-out benchmark: three fanout instances share one room through a real redis-server.

    python -m bench.scale_out            # the full run; writes bench/scale_out.json and the
                                         # scale-out section of docs/benchmarks.md
    python -m bench.scale_out --quick    # a smoke run: tiny numbers, one round, prints only

N viewers of one room are spread evenly over the instances with viewers; one prompt goes to
the first instance, which streams the answer from the mock upstream and publishes each event
once to Redis; Redis sends it to every instance that listens to the room. Measured: what the
viewers received (deliveries/s, latency, the same text with no gap), upstream requests, and
what Redis did: events published, the channel's subscribers, the copies it sent.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import hashlib
import json
import re
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from . import machine, scale_out_report
from .clients import Crowd, Tally
from .harness import CONNECT_CONCURRENCY, PROBE_EVERY, Upstream, _bounded, start_mock
from .procs import (
    CLIENT_CPU,
    ROOT,
    SERVER_CPU,
    Proc,
    core_busy_seconds,
    cpu_seconds,
    free_port,
    kernel_thread,
    pin_self,
)
from .scale_out_clients import (
    RecordingViewer,
    RedisCounters,
    RedisServer,
    check_turn,
    deliveries,
    redis_figures,
)
from .scale_out_report import DOC, RESULTS
from .scale_out_setups import BY_KEY, FULL, QUICK, Plan, Setup
from .scale_out_tables import one_line

PREFIX = "fanout"  # broker.key_prefix (config.toml)
# Thousands of viewers and many prompts come from this one machine: per-client limits off.
ENV = {
    "FANOUT_SERVER_LOG_LEVEL": "warning",
    "FANOUT_LIMITS_MAX_CONNECTIONS_PER_CLIENT": "0",
    "FANOUT_LIMITS_PROMPTS_PER_MINUTE": "0",
    "FANOUT_LIMITS_ROOMS_PER_MINUTE": "0",
}
EVENTS_HEARD = "fanout_broker_events_heard_total"
IDLE_SECONDS = 3.0  # a turn during which nothing arrives for this long has stopped
DRAIN_SECONDS = 10.0
PACED_GRACE = 6.0
_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")  # a log line's time
STOP_SECONDS = 10.0  # an instance still running this long after SIGTERM is killed


class Cluster:
    """Fresh fanout instances on the server CPU, and their viewers (one crowd each)."""

    def __init__(self, setup: Setup, upstream: Upstream, redis: RedisServer, room: str) -> None:
        self.path = f"/api/rooms/{room}/ws"
        self.ports = [free_port() for _ in range(setup.instances)]
        self.procs: list[Proc] = []
        for port in self.ports:
            args = ["serve", "--port", str(port), "--upstream-url", upstream.url]
            args += ["--model", "mock", *(["--broker", redis.url] if setup.redis else [])]
            self.procs.append(Proc("server", args, SERVER_CPU, env=ENV))
        self.crowds = [Crowd() for _ in self.ports]
        self.viewers: list[list[RecordingViewer]] = [[] for _ in self.ports]
        self.logs: list[str] = []

    async def start(self) -> None:
        """Wait until every instance listens."""
        ready = zip(self.procs, self.ports, strict=True)
        await asyncio.gather(*(proc.wait_port(port) for proc, port in ready))

    @property
    def everyone(self) -> list[RecordingViewer]:
        """All viewers, the producer's instance first."""
        return [v for own in self.viewers for v in own]

    async def connect(self, count: int, on: list[int]) -> list[RecordingViewer]:
        """Connect ``count`` viewers spread evenly over the instances ``on``.

        Each instance's first viewer joins before the others: its join opens the room there
        (subscribes to its channel and loads it), and joins that raced it were refused.
        """
        new: list[RecordingViewer] = []
        jobs: list[Callable[[], Awaitable[None]]] = []
        for i in range(count):
            k = on[i % len(on)]
            viewer = RecordingViewer(self.crowds[k], probe=(i // len(on)) % PROBE_EVERY == 0)
            self.viewers[k].append(viewer)
            new.append(viewer)
            jobs.append(functools.partial(viewer.connect, "127.0.0.1", self.ports[k], self.path))
        first = len(on)
        await _bounded(jobs[:first], concurrency=first, timeout=30)
        await _bounded(jobs[first:], concurrency=CONNECT_CONCURRENCY, timeout=30 + count / 50)
        return new

    async def hang_up(self, viewers: list[RecordingViewer]) -> None:
        """Close these viewers and forget them."""
        gone = set(map(id, viewers))
        self.viewers = [[v for v in own if id(v) not in gone] for own in self.viewers]
        await _bounded([v.close for v in viewers], concurrency=500, timeout=60)

    async def quiesce(self, timeout: float = 20.0, busy: float = 0.10) -> None:
        """Wait until the instances together use less than ``busy`` of a core.

        Wait until the instances together use less than ``busy`` of a core (the joins' snapshots and
        presence updates are out).
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        while loop.time() < give_up:
            before = sum(cpu_seconds(p.pid) for p in self.procs)
            await asyncio.sleep(0.25)
            if sum(cpu_seconds(p.pid) for p in self.procs) - before < busy * 0.25:
                return

    async def events_heard(self, session: aiohttp.ClientSession) -> list[int | None]:
        """Each instance's count of events heard from the broker, when /metrics has one."""
        out: list[int | None] = []
        for port in self.ports:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
            values = [ln.split()[-1] for ln in text.splitlines() if ln.startswith(EVENTS_HEARD)]
            out.append(int(float(values[0])) if values else None)
        return out

    async def stop(self) -> None:
        """Close the viewers, stop the instances, keep what they logged (warnings and up)."""
        await _bounded([v.close for v in self.everyone], concurrency=500, timeout=60)
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for i, proc in enumerate(self.procs):
            try:
                await asyncio.to_thread(proc.popen.wait, STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.logs.append(f"instance {i + 1}: still running {STOP_SECONDS:g}s after SIGTERM")
            lines = [_STAMP.sub("", ln) for ln in proc.log_tail(200_000).splitlines()]
            kept = [ln for ln in lines if ln.strip() and "serving on" not in ln]
            self.logs += [f"instance {i + 1}: {ln}" for ln in kept]
            proc.stop()


async def _wait(tallies: list[Tally], probes: bool, deadline: float) -> bool:
    """True when every tally is done (or its probes are) in time and without a long silence."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    seen, quiet_since = -1, loop.time()
    while True:
        if all((t.probes_done if probes else t.done).is_set() for t in tallies):
            return True
        now = loop.time()
        frames = sum(t.frames for t in tallies)
        if frames != seen:
            seen, quiet_since = frames, now
        if now >= give_up or now - quiet_since >= IDLE_SECONDS:
            return False
        await asyncio.sleep(0.02)


async def _turn(cluster: Cluster, model: str, deadline: float) -> tuple[list[Tally], bool]:
    """Prompt the first instance once; wait until every viewer saw turn.end."""
    tallies = []
    for crowd, own in zip(cluster.crowds, cluster.viewers, strict=True):
        crowd.tally = Tally(len(own), sum(v.probe for v in own), model.startswith("mock-stamp"))
        tallies.append(crowd.tally)
    viewers = cluster.everyone
    for v in viewers:
        v.batch(True)
    content = f"scale-out turn {time.monotonic_ns()}"
    await viewers[0].prompt(content, model, ref=content)
    complete = await _wait(tallies, True, deadline)
    for v in viewers:
        v.batch(False)
    complete = await _wait(tallies, False, DRAIN_SECONDS if complete else 1.0) and complete
    return tallies, complete


async def _numsub(redis: RedisServer, room: str, want: int, timeout: float = 5.0) -> int:
    """The room channel's subscribers, once it is ``want`` (or when ``timeout`` ran out)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while True:
        got = int((await redis.client.pubsub_numsub(f"{PREFIX}:{{{room}}}"))[0][1])
        if got == want or loop.time() >= give_up:
            return got
        await asyncio.sleep(0.05)


class CpuMeter:
    """CPU time of some processes, of each core and of this process, over one turn."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.softirq = kernel_thread(f"ksoftirqd/{SERVER_CPU}")
        self._start = self._read()

    def _read(self) -> tuple[float, list[float], dict[int, float], float, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return (
            time.monotonic(),
            [cpu_seconds(pid) for pid in self.pids],
            core_busy_seconds(),
            cpu_seconds(self.softirq) if self.softirq else 0.0,
            usage.ru_utime + usage.ru_stime,
        )

    def stop(self) -> dict[str, Any]:
        """Shares of a core since the start: each process's, each core's, this one's."""
        t0, procs0, cores0, irq0, self0 = self._start
        t1, procs1, cores1, irq1, self1 = self._read()
        wall = t1 - t0
        return {
            "wall": wall,
            "procs": [(b - a) / wall for a, b in zip(procs0, procs1, strict=True)],
            "core0": (cores1.get(0, 0) - cores0.get(0, 0)) / wall,
            "core1": (cores1.get(1, 0) - cores0.get(1, 0)) / wall,
            "softirq0": (irq1 - irq0) / wall,
            "generator": (self1 - self0) / wall,
        }


async def measure(
    setup: Setup,
    mode: str,
    size: int,
    rnd: int,
    plan: Plan,
    upstream: Upstream,
    redis: RedisServer,
    session: aiohttp.ClientSession,
) -> dict[str, Any]:
    """One fresh cluster, ``size`` viewers, a warm-up turn, then the measured turn."""
    room = f"scale-{mode}-{setup.key}-{size}-r{rnd + 1}"
    tokens = plan.burst_tokens if mode == "burst" else plan.paced_tokens
    deadline = 60.0 if mode == "burst" else tokens / plan.paced_rate + PACED_GRACE
    cluster = Cluster(setup, upstream, redis, room)
    rec: dict[str, Any] = {"mode": mode, "setup": setup.key, "round": rnd, "viewers": size}
    try:
        await cluster.start()
        await cluster.connect(size, list(range(setup.watched)))
        # An instance without viewers had some: they watched the warm-up and left, so it
        # must also have stopped listening to the room (subscriptions are reference counted).
        idle = list(range(setup.watched, setup.instances))
        leavers = await cluster.connect(max(1, size // 100), idle) if idle else []
        await cluster.quiesce()
        _, rec["warm_up_complete"] = await _turn(cluster, "mock-stamp-20", 30.0)
        await cluster.hang_up(leavers)
        await cluster.quiesce()
        if setup.redis:
            await _numsub(redis, room, setup.watched)
        rec["viewers_per_instance"] = [len(own) for own in cluster.viewers]
        for v in cluster.everyone:
            v.frames, v.recording = [], True
        heard0 = await cluster.events_heard(session)
        requests0 = await upstream.requests(session)
        before = await RedisCounters.read(redis.port, PREFIX, room) if setup.redis else None
        meter = CpuMeter([p.pid for p in cluster.procs] + [redis.pid, upstream.proc.pid])
        tallies, rec["complete"] = await _turn(cluster, f"mock-stamp-{tokens}", deadline)
        cpu = meter.stop()
        after = await RedisCounters.read(redis.port, PREFIX, room) if setup.redis else None
        rec["requests"] = await upstream.requests(session) - requests0
        heard1 = await cluster.events_heard(session)
        for v in cluster.everyone:
            v.recording = False
        rec["check"] = dataclasses.asdict(check_turn([v.frames for v in cluster.everyone]))
        for v in cluster.everyone:
            v.frames = []
        rec.update(deliveries(tallies, tokens))
        procs = cpu.pop("procs")
        rec["cpu"] = {"instances": procs[:-2], "redis": procs[-2], "mock": procs[-1], **cpu}
        rec["events_heard"] = [
            None if a is None or b is None else b - a for a, b in zip(heard0, heard1, strict=True)
        ]
        if before is not None and after is not None:
            rec["redis"] = await redis_figures(redis.client, PREFIX, room, before, after)
        rec["lost_connections"] = sum(c.lost for c in cluster.crowds)
    except (OSError, RuntimeError, TimeoutError) as exc:  # ConnectionError is an OSError
        rec["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await cluster.stop()
        rec["log"] = cluster.logs[:20]
        rec["log_lines"] = len(cluster.logs)
    return rec


async def _run(plan: Plan, setups: list[Setup], modes: list[str]) -> list[dict[str, Any]]:
    pin_self(CLIENT_CPU)
    redis = RedisServer(plan.redis_cpu)
    mocks: dict[str, Upstream] = {}
    records: list[dict[str, Any]] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        await redis.ready()
        mocks["burst"] = await start_mock(0.0)
        mocks["paced"] = await start_mock(plan.paced_rate)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for rnd in range(plan.rounds):
                for mode in modes:
                    for size in plan.sizes:
                        for setup in setups:
                            started = time.monotonic()
                            rec = await measure(
                                setup, mode, size, rnd, plan, mocks[mode], redis, session
                            )
                            records.append(rec)
                            took = time.monotonic() - started
                            print(f"round {rnd + 1} {mode:5} {size:6,} {setup.key:5} {took:5.1f}s")
                            print("   ", one_line(rec, plan.redis_cpu), flush=True)
    finally:
        for mock in mocks.values():
            mock.proc.stop()
        await redis.stop()
    return records


def _source_digest() -> str:
    """A digest of the server's source files, to notice an edit during the run."""
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted((ROOT / "server").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def main() -> None:
    """Parse the arguments, run, print, and (full run) write the JSON and the doc's section."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run, prints only")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--sizes", help="comma-separated viewer counts (total over instances)")
    parser.add_argument("--setups", default=",".join(BY_KEY), help="comma-separated subset")
    parser.add_argument("--modes", default="burst,paced", help="burst, paced or both")
    parser.add_argument(
        "--redis-cpu", type=int, choices=(0, 1), help="CPU for redis-server (default 0)"
    )
    parser.add_argument(
        "--out", type=Path, help="markdown whose scale-out section to rewrite (default: the docs)"
    )
    parser.add_argument(
        "--from-results",
        type=Path,
        nargs="?",
        const=RESULTS,
        help="only redraw the section from saved results (default bench/scale_out.json)",
    )
    args = parser.parse_args()
    if args.from_results:
        scale_out_report.write(args.out or DOC, json.loads(args.from_results.read_text()))
        return
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = dataclasses.replace(plan, rounds=args.rounds)
    if args.sizes:
        plan = dataclasses.replace(plan, sizes=tuple(int(s) for s in args.sizes.split(",")))
    if args.redis_cpu is not None:
        plan = dataclasses.replace(plan, redis_cpu=args.redis_cpu)
    modes = args.modes.split(",")
    if any(k not in BY_KEY for k in args.setups.split(",")) or set(modes) - {"burst", "paced"}:
        parser.error("unknown setup or mode")
    out: Path | None = args.out or (None if args.quick else DOC)
    info = machine.describe()
    info["command"] = " ".join(["python -m bench.scale_out", *sys.argv[1:]])
    started, source = time.monotonic(), _source_digest()
    setups = [BY_KEY[k] for k in args.setups.split(",")]
    records = uvloop.run(_run(plan, setups, modes))
    info.update(machine.after(), seconds=round(time.monotonic() - started))
    # Each measured turn starts fresh instances from the working tree: an edit meanwhile
    # would mix two versions of the server in one run.
    info["server_changed_during_run"] = _source_digest() != source
    saved = json.loads(
        json.dumps({"plan": dataclasses.asdict(plan), "machine": info, "records": records})
    )
    print(scale_out_report.section(saved))
    if out is not None:
        results = RESULTS if out.resolve() == DOC else out.with_suffix(".json")
        results.write_text(json.dumps(saved, indent=1) + "\n")
        scale_out_report.write(out, saved)
        print(f"wrote {out} and {results}")


if __name__ == "__main__":
    main()
