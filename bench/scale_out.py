"""Scale-out benchmark: three fanout instances share one room through a real redis-server.

    python -m bench.scale_out            # the full run; writes bench/scale_out.json and
                                         # docs/benchmarks-scale-out.md
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
import datetime
import functools
import json
import math
import re
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from . import machine
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

RESULTS = ROOT / "bench" / "scale_out.json"
DOC = ROOT / "docs" / "benchmarks-scale-out.md"
PREFIX = "fanout"  # broker.key_prefix (config.toml)
ENV = {"FANOUT_SERVER_LOG_LEVEL": "warning"}
EVENTS_HEARD = "fanout_broker_events_heard_total"
IDLE_SECONDS = 3.0  # a turn during which nothing arrives for this long has stopped
DRAIN_SECONDS = 10.0
PACED_GRACE = 6.0
_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")  # a log line's time
STOP_SECONDS = 10.0  # an instance still running this long after SIGTERM is killed
SATURATED = 0.90  # a generator (process or core) this busy limits what it measures
SHARED = 0.10  # more of CPU 0 than this went to processes outside the deployment
PLACEMENT = {
    0: "next to the instances: the deployment under test gets CPU 0, the instruments CPU 1.",
    1: "next to the load generator and the mocks, off the instances' core.",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """Sizes of the run; ``FULL`` is ``make bench``, ``QUICK`` a smoke run."""

    rounds: int
    sizes: tuple[int, ...]
    burst_tokens: int
    paced_rate: float
    paced_tokens: int
    redis_cpu: int


FULL = Plan(3, (300, 1500, 3000), 2000, 80.0, 200, SERVER_CPU)
QUICK = Plan(1, (60,), 200, 80.0, 40, SERVER_CPU)


@dataclasses.dataclass(frozen=True, slots=True)
class Setup:
    """How many instances run, how many of them have viewers, and the broker."""

    key: str
    label: str
    instances: int
    watched: int
    redis: bool


SETUPS = (
    Setup("3of3", "3 instances, viewers on 3", 3, 3, True),
    Setup("2of3", "3 instances, viewers on 2", 3, 2, True),
    Setup("1mem", "1 instance, memory://", 1, 1, False),
)
BY_KEY = {s.key: s for s in SETUPS}


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
        """Wait until the instances together use less than ``busy`` of a core (the joins'
        snapshots and presence updates are out)."""
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
                            print("   ", summary(rec, plan.redis_cpu), flush=True)
    finally:
        for mock in mocks.values():
            mock.proc.stop()
        await redis.stop()
    return records


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
    """What the viewers received, per viewer count and setup (a burst's rate, a paced
    answer's latency)."""
    burst = mode == "burst"
    head = "deliveries/s, median (min-max) | frames/s | p99 ms" if burst else "p50 ms | p99 ms"
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
            figures = f"{rate} | {frames:,.0f}"
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
    """What Redis did per turn, both modes."""
    rows = [
        "| answer | viewers | setup | events (XADD / PUBLISH) | channel subscribers "
        "| messages sent (events x subscribers) | per event | copies, from output bytes "
        "| catch-up reads | events heard per instance |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode in ("burst", "paced"):
        for recs in _groups(records, mode):
            reds = [r["redis"] for r in recs if "redis" in r]
            if not reds:
                continue
            first = recs[0]
            heard = [r["events_heard"] for r in recs]
            heard_text = (
                "not exposed" if all(x is None for h in heard for x in h) else _count(heard)
            )
            events = [f"{x['events']} ({x['xadd']} / {x['publish']})" for x in reds]
            rows.append(
                f"| {mode} | {first['viewers']:,} | {BY_KEY[first['setup']].label} "
                f"| {_count(events)} "
                f"| {_count([x['numsub_after'] for x in reds])} "
                f"| {_count([x['messages'] for x in reds])} "
                f"| {_count([x['messages_per_event'] for x in reds])} "
                f"| {_spread([x['copies_from_bytes'] for x in reds], lambda v: f'{v:.2f}')} "
                f"| {_count([x['catch_up_reads'] for x in reds])} | {heard_text} |"
            )
    return "\n".join(rows)


def summary(rec: dict[str, Any], redis_cpu: int) -> str:
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


def _findings(records: list[dict[str, Any]]) -> str:
    """The summary's bullets: the three properties, turn by turn."""
    turns = len(records)
    shared = [r for r in records if "redis" in r]
    per_event = sum(r["redis"]["messages_per_event"] == BY_KEY[r["setup"]].watched for r in shared)
    copies = [r["redis"]["copies_from_bytes"] for r in shared]
    agree = sum(
        round(r["redis"]["copies_from_bytes"]) == r["redis"]["numsub_after"] for r in shared
    )
    heard = [r for r in shared if None not in r["events_heard"]]
    heard_ok = sum(
        r["events_heard"] == [r["redis"]["events"] if n else 0 for n in r["viewers_per_instance"]]
        for r in heard
    )
    catch_up = sum(r["redis"]["catch_up_reads"] for r in shared)
    whole = sum(r["check"]["gaps"] == 0 and r["check"]["texts"] == 1 for r in records)
    if heard:
        count = (
            f"every event once on each instance with viewers and none on the others in "
            f"{heard_ok} of {len(heard)} turns"
        )
    else:
        count = "not exposed by `/metrics`"
    lines = [
        f"- **Redis messages per event = instances with viewers** in {per_event} of "
        f"{len(shared)} turns through Redis (viewers on 3 instances: 3; on 2 of 3: 2). "
        f"Counted from Redis's output bytes instead: {min(copies, default=0):.2f} to "
        f"{max(copies, default=0):.2f} copies of each turn's messages, the nearest whole "
        f"number matching in {agree} of {len(shared)}.",
        f"- **Each instance's own count** (`fanout_broker_events_heard_total`): {count}. "
        f"Replicas that read the stream to catch up during a measured turn: {catch_up} reads.",
        f"- **One upstream request per prompt** in "
        f"{sum(r['requests'] == 1 for r in records)} of {turns} turns.",
        f"- **Every viewer rebuilt the same text with no gap** in {whole} of {turns} turns.",
    ]
    return "\n".join(lines)


def render(saved: dict[str, Any]) -> str:
    """The whole markdown page."""
    plan, info = saved["plan"], saved["machine"]
    records = [r for r in saved["records"] if "error" not in r]
    failed = [r for r in saved["records"] if "error" in r]
    cpu = plan["redis_cpu"]
    sizes = ", ".join(f"{n:,}" for n in plan["sizes"])
    logs = Counter(ln.split(": ", 1)[1] for r in saved["records"] for ln in r["log"])
    log_text = (
        "\n".join(f"    {n:4} x  {ln}" for ln, n in logs.most_common(30)) if logs else "None."
    )
    failures = "\n".join(
        f"- {r['mode']} {r['viewers']:,} {r['setup']} round {r['round'] + 1}: {r['error']}"
        for r in failed
    )
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    pinned = (
        f"yes: the fanout instances on CPU 0, redis-server on CPU {cpu}, the mock upstreams "
        "and the load generator on CPU 1"
        if info["pinned"]
        else "no (taskset missing, or one CPU)"
    )
    rate, burst, paced = f"{plan['paced_rate']:g}", plan["burst_tokens"], plan["paced_tokens"]
    return f"""# Scale-out benchmark: instances sharing a room through Redis

Three fanout instances share one room through a real redis-server: N viewers of the room are
spread evenly over the instances, one prompt goes to the first instance, which streams the
answer from the mock upstream (one request) and publishes each event once to Redis, and
Redis sends it to every instance that listens to the room. Generated by
`python -m bench.scale_out` on {datetime.date.today().isoformat()}; raw numbers in
`bench/scale_out.json`.

## Summary

{_findings(records)}
{f"{chr(10)}Failed measurements:{chr(10)}{chr(10)}{failures}{chr(10)}" if failed else ""}
## Machine and placement

| | |
|---|---|
| CPU | {info["cpu"]}, {info["cpus"]} cores |
| kernel, Python | Linux {info["kernel"]}, Python {info["python"]} |
| fanout | commit {info["revision"]} |
| packages | {packages} |
| pinning | {pinned} |
| network | loopback only |
| load average (1/5/15 min) | before {info["load_before"]}, after {info["load_after"]} |
| run time | {info["seconds"] / 60:.1f} min: `{info["command"]}` |

With two cores this cannot show instances adding capacity: the three instances share CPU 0,
so together they deliver what one core can, as the single instance does (the `memory://`
rows). What it shows is what sharing a room through Redis costs on that core, and that it
stays correct under load. redis-server runs on CPU {cpu}, {PLACEMENT[cpu]} Its CPU use is in
the tables: a few percent of a core at most, since it handles one write and a few copies
per event, never one per viewer. Other engineers use this machine too; "CPU 0 shared" in
the notes means CPU 0 was busier than the deployment (its processes and the kernel's
network thread) by 10% of a core or more.

## Commands

```sh
make bench                          # bench.run, then this page
python -m bench.scale_out           # this page and bench/scale_out.json
python -m bench.scale_out --quick   # smoke run: tiny numbers, one round, prints only
python -m bench.scale_out --sizes 600 --setups 3of3,2of3 --modes paced --rounds 1 --out x.md
python -m bench.scale_out --redis-cpu 1   # redis-server on the load generator's core
```

What it starts (Redis and the two mocks once; the instances afresh for every measured turn):

```sh
taskset -c {cpu} redis-server --port R --bind 127.0.0.1 --save '' --appendonly no
taskset -c 1 python -m server mock-upstream --port M1 --tokens-per-second 0 --ttft 0
taskset -c 1 python -m server mock-upstream --port M2 --tokens-per-second {rate} --ttft 0
# three instances (P1, P2, P3) on the burst mock (M1) or the paced one (M2):
FANOUT_SERVER_LOG_LEVEL=warning taskset -c 0 python -m server serve --port P1 \\
    --upstream-url http://127.0.0.1:M1/v1 --model mock --broker redis://127.0.0.1:R/0
# the baseline: one instance, the same command without --broker (memory://)
```

No `OPENAI_API_KEY` is set: with `--upstream-url` the instances need none. Everything else
is `config.toml`'s default (`broker.key_prefix = "fanout"`, `broker.lease_seconds = 5`).

## How it is measured

- **Rounds**: {plan["rounds"]}. Each round runs every answer, size ({sizes} viewers in all,
  spread evenly over the instances with viewers) and setup in turn, each on fresh
  instances and a fresh room. Tables give the median (min-max) over the rounds.
- **Answers**: after a warm-up answer of 20 tokens, the measured one: *burst*,
  `mock-stamp-{burst}` written as fast as the mock can; *paced*, `mock-stamp-{paced}` at
  {rate} tokens/s. Each token carries the mock's send time, so latency is receipt time minus
  stamp (same clock); one viewer in ten is a probe that reads every frame as it comes, as in
  `docs/benchmarks.md`. In the burst, latency is mostly queueing: the whole answer arrives
  at once. Deliveries/s = tokens received by all viewers / (last receipt - first receipt).
  The producer is instance 1 (its viewers get each event when Redis has stored it); the
  other instances' viewers get it from Redis's pub/sub: the p99 columns split them.
- **Whole, one text**: every viewer keeps the measured turn's frames; afterwards each one's
  text is rebuilt from its deltas (merged deltas included, via `first_seq`) and its seqs
  checked: `turn.start`, every seq exactly once and in order, `turn.end`. All texts must be
  identical.
- **Upstream requests**: the mock's own count (`GET /v1/_stats`) around the measured turn.
- **Redis**, read just before the prompt and after the last viewer saw `turn.end`: the
  room's seq (events stored), `INFO commandstats` (XADD and PUBLISH calls, those of the
  Lua scripts included; XRANGE calls are replicas catching up by reading the stream instead
  of the live feed) and `PUBSUB NUMSUB` of the room's channel `fanout:{{room}}`. Redis
  counts no deliveries of pub/sub messages, so messages sent = events x subscribers. As an
  independent check, the growth of `total_net_output_bytes` (less the replies to the
  benchmark's own reads, which it reads in RESP directly to know their size) is divided by
  the bytes ONE subscriber receives for the turn (each `E epoch kind seq data` payload as a
  RESP2 `message`): the copies Redis wrote. It runs a little above the subscriber count
  because the counter also holds the replies to the producer's own writes.
- **Each instance's count**: the events it heard on pub/sub, from its `/metrics`
  (`fanout_broker_events_heard_total`) before and after the turn, when it exposes it.
- **Viewers on 2 of 3 instances**: the third instance's viewers (1% of N) watch the warm-up
  and leave before the measured turn, so that instance must also have stopped listening to
  the room (subscriptions are reference counted): the subscriber count has to drop to 2.

## Burst: deliveries

{deliveries_table(records, "burst", cpu)}

## Paced: latency

{deliveries_table(records, "paced", cpu)}

## Redis per measured turn

Events are the turn's `turn.start`, deltas and `turn.end`. "Per event" is the channel's
subscriber count (the instances listening) over the turn; "copies" is counted from bytes.

{redis_table(records)}

## Instance logs (warnings and errors)

{log_text}
"""


def main() -> None:
    """Parse the arguments, run, print, and (full run) write the JSON and the markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run, prints only")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--sizes", help="comma-separated viewer counts (total over instances)")
    parser.add_argument("--setups", default=",".join(BY_KEY), help="comma-separated subset")
    parser.add_argument("--modes", default="burst,paced", help="burst, paced or both")
    parser.add_argument(
        "--redis-cpu", type=int, choices=(0, 1), help="CPU for redis-server (default 0)"
    )
    parser.add_argument("--out", type=Path, help="markdown to write (default: the docs page)")
    args = parser.parse_args()
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
    started = time.monotonic()
    setups = [BY_KEY[k] for k in args.setups.split(",")]
    records = uvloop.run(_run(plan, setups, modes))
    info.update(machine.after(), seconds=round(time.monotonic() - started))
    saved = json.loads(
        json.dumps({"plan": dataclasses.asdict(plan), "machine": info, "records": records})
    )
    text = render(saved)
    print(text)
    if out is not None:
        results = RESULTS if out.resolve() == DOC else out.with_suffix(".json")
        results.write_text(json.dumps(saved, indent=1) + "\n")
        out.write_text(text)
        print(f"wrote {out} and {results}")


if __name__ == "__main__":
    main()
