"""The scenarios: each starts a fresh server, measures, and stops by itself.

- burst: V viewers, one answer of T deltas sent as fast as the mock can write.
- paced: an answer at R tokens/s, viewers growing step by step until the system falls apart.
- idle: server RSS before and after V idle viewers.
- stalled: healthy viewers' latency with and without 5% readers that never read (and whose
  buffers were filled first, as after a while in a long-lived room).
- memory: a long fast answer to stalled readers: is what the server keeps for them bounded?
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from .harness import Deployment, TurnResult, Upstream
from .systems import System

# A paced step with a p99 above this (or undelivered tokens) ends that system's ladder.
FALLS_APART_SECONDS = 1.0
# A turn during which nothing arrives for this long has stopped delivering.
IDLE_SECONDS = 3.0
# A paced answer must reach every viewer within its own length plus this many seconds.
PACED_GRACE = 6.0


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes of every scenario; ``FULL`` is ``make bench``, ``QUICK`` a smoke run."""

    rounds: int
    burst_viewers: int
    burst_tokens: int
    burst_deadline: float
    paced_rate: float
    paced_tokens: int
    paced_steps: tuple[int, ...]
    idle_viewers: int
    stall_viewers: int
    stall_fraction: float
    stall_tokens: int
    stall_fill: int
    memory_stalled: int
    memory_fill: int

    @property
    def stalled_count(self) -> int:
        """How many of the stalled scenario's viewers never read."""
        return max(1, round(self.stall_viewers * self.stall_fraction))


FULL = Plan(
    rounds=3,
    burst_viewers=500,
    burst_tokens=2000,
    burst_deadline=10.0,
    paced_rate=80.0,
    paced_tokens=200,
    paced_steps=(500, 1000, 1500, 2000, 3000, 5000),
    idle_viewers=2000,
    stall_viewers=1000,
    stall_fraction=0.05,
    stall_tokens=600,
    stall_fill=700,
    memory_stalled=10,
    memory_fill=1700,
)
QUICK = Plan(
    rounds=1,
    burst_viewers=50,
    burst_tokens=200,
    burst_deadline=10.0,
    paced_rate=80.0,
    paced_tokens=40,
    paced_steps=(20, 50),
    idle_viewers=100,
    stall_viewers=40,
    stall_fraction=0.05,
    stall_tokens=40,
    stall_fill=100,
    memory_stalled=2,
    memory_fill=200,
)


@dataclass(frozen=True, slots=True)
class Mocks:
    """The mock upstreams: one as fast as possible, one paced."""

    fast: Upstream
    paced: Upstream


@dataclass(slots=True)
class Record:
    """One measurement of one system in one round."""

    scenario: str
    round: int
    system: str
    viewers: int
    turn: TurnResult | None = None
    baseline: TurnResult | None = None
    rss: dict[str, int] = field(default_factory=dict)
    stalled: int = 0


Scenario = Callable[[System, Mocks, aiohttp.ClientSession, Plan, int], Awaitable[list[Record]]]


def fell_apart(turn: TurnResult) -> bool:
    """True when a paced turn lost tokens or its p99 exceeded FALLS_APART_SECONDS."""
    return not turn.complete or turn.p99 > FALLS_APART_SECONDS


async def _warm_up(d: Deployment) -> None:
    """One short turn, so that lazy imports and first-use costs stay out of the measurement."""
    await d.turn("mock-stamp-20", 20, deadline=30.0, idle=10.0)
    d.broken = False


async def burst(
    system: System, mocks: Mocks, session: aiohttp.ClientSession, plan: Plan, rnd: int
) -> list[Record]:
    """V viewers, T deltas as fast as the upstream writes them."""
    async with Deployment(system, mocks.fast, session) as d:
        await d.grow(plan.burst_viewers)
        await _warm_up(d)
        model = f"mock-stamp-{plan.burst_tokens}"
        turn = await d.turn(model, plan.burst_tokens, plan.burst_deadline, IDLE_SECONDS)
    return [Record("burst", rnd, system.key, plan.burst_viewers, turn)]


async def paced(
    system: System, mocks: Mocks, session: aiohttp.ClientSession, plan: Plan, rnd: int
) -> list[Record]:
    """One answer per step at the paced rate; more viewers each step until it falls apart.

    A peer stops there. fanout, the system under test, goes on to the last step (the target),
    so that the verdict reports what it does there rather than "never got there".
    """
    records: list[Record] = []
    deadline = plan.paced_tokens / plan.paced_rate + PACED_GRACE
    steps = list(plan.paced_steps)
    i = 0
    async with Deployment(system, mocks.paced, session) as d:
        while i < len(steps):
            await d.grow(steps[i])
            if not records:
                await _warm_up(d)
            await asyncio.sleep(0.5)
            turn = await d.turn(
                f"mock-stamp-{plan.paced_tokens}", plan.paced_tokens, deadline, IDLE_SECONDS
            )
            records.append(Record("paced", rnd, system.key, steps[i], turn))
            if not fell_apart(turn):
                i += 1
            elif system.under_test and i < len(steps) - 1 and await d.settle(20.0):
                i = len(steps) - 1
            else:
                break
    return records


async def idle(
    system: System, mocks: Mocks, session: aiohttp.ClientSession, plan: Plan, rnd: int
) -> list[Record]:
    """Server RSS before and after V idle viewers (the SSE proxy has no idle viewers)."""
    if not system.broadcasts:
        return []
    async with Deployment(system, mocks.fast, session) as d:
        await d.grow(1)
        await _warm_up(d)
        await asyncio.sleep(0.5)
        before = d.rss()
        await d.grow(1 + plan.idle_viewers)
        await asyncio.sleep(1.0)
        after = d.rss()
    return [
        Record("idle", rnd, system.key, plan.idle_viewers, rss={"before": before, "after": after})
    ]


async def stalled(
    system: System, mocks: Mocks, session: aiohttp.ClientSession, plan: Plan, rnd: int
) -> list[Record]:
    """Healthy viewers' latency and server RSS without, then with, 5% stalled readers.

    A stall only reaches the server process once the kernel and transport buffers in front
    of the reader are full, as they are after a while in a busy room. So after the answer
    without them, the healthy viewers (but one) hang up, the stalled readers join, a fast
    filler answer (``stall_fill`` chunks of ~1 kB) fills their buffers, and the healthy
    viewers join again for the answer with them.
    """
    if not system.broadcasts:
        return []
    stalled_n = plan.stalled_count
    healthy = plan.stall_viewers - stalled_n
    model = f"mock-stamp-{plan.stall_tokens}"
    deadline = plan.stall_tokens / plan.paced_rate + PACED_GRACE
    rss: dict[str, int] = {}
    with_stalled: TurnResult | None = None
    async with Deployment(system, mocks.paced, session) as d:
        await d.grow(healthy)
        await _warm_up(d)
        await d.quiesce()
        rss["before"] = d.rss()
        without = await d.turn(model, plan.stall_tokens, deadline, IDLE_SECONDS)
        rss["after"] = d.rss()
        # A system that cannot carry the load without stalled readers has nothing to compare.
        if not fell_apart(without):
            await d.shrink(1)
            await d.stall(stalled_n)
            filler = f"mock-flood-{plan.stall_fill}"
            filled = await d.turn(filler, plan.stall_fill, 30.0, IDLE_SECONDS)
            await d.grow(healthy)
            if filled.complete:  # else the system is wedged: no warm-up will get through
                await d.turn("mock-stamp-20", 20, 10.0, IDLE_SECONDS)
            # New viewers of fanout get a snapshot holding the filler: let it go out first.
            await d.quiesce()
            rss["stalled_before"] = d.rss()
            with_stalled = await d.turn(model, plan.stall_tokens, deadline, IDLE_SECONDS)
            rss["stalled_after"] = d.rss()
    return [Record("stalled", rnd, system.key, healthy, with_stalled, without, rss, stalled_n)]


async def _big_answer(
    system: System, mocks: Mocks, session: aiohttp.ClientSession, plan: Plan, stalled: int
) -> tuple[TurnResult, dict[str, int]]:
    """A fresh server, one viewer (and ``stalled`` readers that never read), one big answer."""
    async with Deployment(system, mocks.fast, session) as d:
        await d.grow(1)
        await _warm_up(d)
        await d.stall(stalled)
        await d.quiesce()
        before = d.rss()
        turn = await d.turn(f"mock-flood-{plan.memory_fill}", plan.memory_fill, 60.0, IDLE_SECONDS)
        await d.quiesce()
        return turn, {"before": before, "after": d.rss()}


async def memory(
    system: System, mocks: Mocks, session: aiohttp.ClientSession, plan: Plan, rnd: int
) -> list[Record]:
    """What S stalled readers cost in memory, against the same answer without them.

    One viewer and one big answer (``memory_fill`` chunks of ~1 kB, as fast as possible), in a fresh
    server without, then in another with, S readers that never read. What the stalled readers cost
    is the second server's growth over the answer less the first's (which is what one answer adds
    whoever watches: fanout keeps the room's history).
    """
    if not system.broadcasts:
        return []
    baseline, alone = await _big_answer(system, mocks, session, plan, 0)
    turn, crowd = await _big_answer(system, mocks, session, plan, plan.memory_stalled)
    rss = {**alone, "stalled_before": crowd["before"], "stalled_after": crowd["after"]}
    return [Record("memory", rnd, system.key, 1, turn, baseline, rss, plan.memory_stalled)]


SCENARIOS: dict[str, Scenario] = {
    "burst": burst,
    "paced": paced,
    "idle": idle,
    "stalled": stalled,
    "memory": memory,
}
