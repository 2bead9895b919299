"""A running system under test with its clients, and one measured turn."""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import resource
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

import aiohttp

from .clients import Crowd, SseClient, StalledClient, Tally, WireClient
from .procs import (
    CLIENT_CPU,
    SERVER_CPU,
    Proc,
    core_busy_seconds,
    cpu_seconds,
    free_port,
    kernel_thread,
    rss_bytes,
)
from .systems import System

CONNECT_CONCURRENCY = 50
# One viewer in PROBE_EVERY reads frame by frame and measures latency; the rest are sinks.
PROBE_EVERY = 10
# After the probes saw the end, how long the sinks get to read their last batch.
DRAIN_SECONDS = 10.0
_refs = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Upstream:
    """One running mock upstream: its process, base URL and streaming rate."""

    proc: Proc
    url: str
    rate: float

    async def requests(self, session: aiohttp.ClientSession) -> int:
        """How many chat completion requests the mock has answered so far."""
        async with session.get(f"{self.url}/_stats") as resp:
            return int((await resp.json())["requests"])


@dataclass(frozen=True, slots=True)
class TurnResult:
    """One measured turn, as the healthy clients saw it (latencies in seconds)."""

    readers: int
    expected: int
    tokens: int
    frames: int
    frame_bytes: int
    receipt_seconds: float
    wall_seconds: float
    complete: bool
    gen_cpu: float
    server_cpu: float
    mock_cpu: float
    server_core: float  # CPU 0 busy, less its softirq thread (the server's own network work)
    client_core: float
    upstream_requests: int
    p50: float
    p90: float
    p99: float

    @property
    def rate(self) -> float:
        """Deliveries (tokens received, all clients) per second of receipt."""
        return self.tokens / self.receipt_seconds if self.receipt_seconds > 0 else 0.0

    @property
    def delivered(self) -> float:
        """The fraction of expected deliveries that arrived."""
        return self.tokens / self.expected if self.expected else 1.0


def percentiles(latencies: array[float], expected: int, *qs: float) -> list[float]:
    """Latency quantiles; tokens that never arrived count as infinitely late."""
    total = max(expected, len(latencies))
    if total == 0:
        return [math.nan for _ in qs]
    ordered = sorted(latencies)
    ranks = [max(0, math.ceil(q * total) - 1) for q in qs]
    return [ordered[rank] if rank < len(ordered) else math.inf for rank in ranks]


async def start_mock(rate: float) -> Upstream:
    """Start a mock upstream on the client CPU streaming ``rate`` tokens/s (0: flat out)."""
    port = free_port()
    args = ["mock-upstream", "--port", str(port), "--tokens-per-second", str(rate), "--ttft", "0"]
    proc = Proc("server", args, CLIENT_CPU)
    await proc.wait_port(port)
    return Upstream(proc, f"http://127.0.0.1:{port}/v1", rate)


class Deployment:
    """A system under test, started on the server CPU, with the clients connected to it."""

    def __init__(self, system: System, upstream: Upstream, session: aiohttp.ClientSession) -> None:
        self.system = system
        self.upstream = upstream
        self.session = session
        self.port = free_port()
        self.proc = system.start(self.port, upstream.url, "mock")
        self.crowd = Crowd()
        self.clients: list[WireClient] = []
        self.stalled: list[StalledClient] = []
        self.viewers = 0  # the SSE proxy's "viewers": the GETs each turn opens
        self.broken = False
        # Network work the kernel defers to this thread is the server's, not another user's.
        self.softirq = kernel_thread(f"ksoftirqd/{SERVER_CPU}")

    async def __aenter__(self) -> Deployment:
        try:
            await self.proc.wait_port(self.port)
        except BaseException:
            self.proc.stop()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for stalled in self.stalled:
            stalled.close()
        await _bounded(
            [c.close for c in self.clients], concurrency=500, timeout=max(len(self.clients), 60)
        )
        self.proc.stop()

    def rss(self) -> int:
        """The server's resident memory now, in bytes."""
        return rss_bytes(self.proc.pid)

    async def grow(self, count: int) -> None:
        """Connect viewers until there are ``count`` (SSE proxy: just remember the count)."""
        if not self.system.broadcasts:
            self.viewers = count
            return
        sio = self.system.client == "sio"
        start = len(self.clients)
        new = [WireClient(self.crowd, sio, i % PROBE_EVERY == 0) for i in range(start, count)]
        self.clients.extend(new)
        self.viewers = count
        path = self.system.path
        await _bounded(
            [functools.partial(c.connect, "127.0.0.1", self.port, path) for c in new],
            concurrency=CONNECT_CONCURRENCY,
            timeout=30 + len(new) / 50,
        )

    async def quiesce(self, timeout: float = 20.0, busy: float = 0.10) -> None:
        """Wait until the server's CPU use falls below ``busy``.

        Wait until the server's CPU use over a quarter second falls below ``busy`` (the snapshots
        sent to a crowd that just joined, say, are out).
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        while loop.time() < give_up:
            before = cpu_seconds(self.proc.pid)
            await asyncio.sleep(0.25)
            if cpu_seconds(self.proc.pid) - before < busy * 0.25:
                return

    async def settle(self, timeout: float) -> bool:
        """Wait until the last turn reached every viewer; False if it did not in time."""
        try:
            await asyncio.wait_for(self.crowd.tally.done.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def shrink(self, count: int) -> None:
        """Hang up viewers until ``count`` are left (the first ones stay)."""
        gone, self.clients = self.clients[count:], self.clients[:count]
        self.viewers = count
        await _bounded([c.close for c in gone], concurrency=500, timeout=60)

    async def stall(self, count: int) -> None:
        """Connect ``count`` readers that never read."""
        new = [StalledClient() for _ in range(count)]
        self.stalled.extend(new)
        path, sio = self.system.path, self.system.client == "sio"
        await _bounded(
            [functools.partial(c.connect, "127.0.0.1", self.port, path, sio) for c in new],
            concurrency=CONNECT_CONCURRENCY,
            timeout=60,
        )

    async def turn(self, model: str, tokens: int, deadline: float, idle: float) -> TurnResult:
        """Prompt once and wait until every viewer saw ``turn.end``.

        Gives up after ``deadline`` seconds, or after ``idle`` seconds without a delivery
        (a system that has stopped delivering is not going to start again).
        """
        probes = sum(c.probe for c in self.clients) if self.system.broadcasts else self.viewers
        # Only mock-stamp answers carry send times; others (fillers) count frames.
        tally = Tally(self.viewers, probes, stamped=model.startswith("mock-stamp"))
        self.crowd.tally = tally
        for client in self.clients:
            client.batch(True)
        requests0 = await self.upstream.requests(self.session)
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        server0, mock0 = cpu_seconds(self.proc.pid), cpu_seconds(self.upstream.proc.pid)
        softirq0 = cpu_seconds(self.softirq) if self.softirq else 0.0
        cores0 = core_busy_seconds()
        wall0 = time.time()
        content = f"benchmark turn {next(_refs)}"
        readers: list[asyncio.Task[None]] = []
        if self.system.broadcasts:
            await self.clients[0].prompt(content, model, ref=content)
        else:
            url = self.system.url(self.port, content, model)
            readers = [
                asyncio.create_task(SseClient(self.crowd).run(self.session, url))
                for _ in range(self.viewers)
            ]
        complete = await _wait(tally, tally.probes_done, deadline, idle)
        for client in self.clients:
            client.batch(False)
        complete = await _wait(tally, tally.done, DRAIN_SECONDS if complete else 1.0, idle)
        wall1 = time.time()
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        server1, mock1 = cpu_seconds(self.proc.pid), cpu_seconds(self.upstream.proc.pid)
        softirq1 = cpu_seconds(self.softirq) if self.softirq else 0.0
        cores1 = core_busy_seconds()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        requests1 = await self.upstream.requests(self.session)
        wall = wall1 - wall0
        gen = usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime
        self.broken = self.broken or not complete
        expected = tokens * self.viewers
        p50, p90, p99 = percentiles(tally.latencies, tokens * probes, 0.5, 0.9, 0.99)
        return TurnResult(
            readers=self.viewers,
            expected=expected,
            tokens=tally.tokens,
            frames=tally.frames,
            frame_bytes=tally.bytes,
            receipt_seconds=max(tally.last - tally.first, 0.0),
            wall_seconds=wall,
            complete=complete,
            gen_cpu=gen / wall,
            server_cpu=(server1 - server0) / wall,
            mock_cpu=(mock1 - mock0) / wall,
            server_core=(
                cores1.get(SERVER_CPU, 0) - cores0.get(SERVER_CPU, 0) - (softirq1 - softirq0)
            )
            / wall,
            client_core=(cores1.get(CLIENT_CPU, 0) - cores0.get(CLIENT_CPU, 0)) / wall,
            upstream_requests=requests1 - requests0,
            p50=p50,
            p90=p90,
            p99=p99,
        )


async def _wait(tally: Tally, done: asyncio.Event, deadline: float, idle: float) -> bool:
    """True when ``done`` is set in time (and while the viewers keep receiving)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    seen, quiet_since = -1, loop.time()
    while not done.is_set():
        now = loop.time()
        if tally.frames != seen:
            seen, quiet_since = tally.frames, now
        if now >= give_up or now - quiet_since >= idle:
            return False
        try:
            await asyncio.wait_for(done.wait(), min(0.25, give_up - now))
        except TimeoutError:
            continue
    return True


async def _bounded(
    jobs: list[Callable[[], Awaitable[None]]], concurrency: int, timeout: float
) -> None:
    """Run the jobs, at most ``concurrency`` at a time; the first failure is raised."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    async with asyncio.timeout(timeout):
        await asyncio.gather(*(one(job) for job in jobs))
