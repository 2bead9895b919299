"""One contract, two backends: the memory broker and the Redis broker pass the same tests.

Each test gets two brokers (instances "a" and "b") that share one store: a MemoryStore, or
a real redis-server. Time passes through ``Pair.wait``: the memory brokers read a manual clock
that it moves at once; Redis keeps real TTLs, so there it sleeps (a few leases at most).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from server.broker.base import Broker, Fenced, Record, Seed
from server.broker.memory import PROMPT_ID_SECONDS, MemoryBroker, MemoryStore
from server.broker.redis_broker import RedisBroker
from server.core.clock import ManualClock
from server.core.types import RoomName

from .redis_server import RedisServer

ROOM = RoomName("contract")
LEASE = 0.6


@dataclass
class Heard:
    """What one instance's listener was told."""

    records: list[tuple[str, str, Record]] = field(default_factory=list)
    presence: list[str] = field(default_factory=list)
    reconnects: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_record(self, room: RoomName, epoch: str, record: Record) -> None:
        self.records.append((room, epoch, record))
        self.changed.set()

    def on_presence(self, room: RoomName) -> None:
        self.presence.append(room)
        self.changed.set()

    def on_reconnect(self) -> None:
        self.reconnects += 1
        self.changed.set()

    async def until(self, check: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self.changed.clear()
                await self.changed.wait()


@dataclass
class Pair:
    a: Broker
    b: Broker
    heard_a: Heard
    heard_b: Heard
    wipe: Callable[[], None]
    wait: Callable[[float], Awaitable[None]]  # let this much of the brokers' time pass


@pytest.fixture(params=["memory", "redis"])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pair]:
    redis: RedisServer | None = None
    if request.param == "memory":
        store = MemoryStore(max_events=50, max_turns=3)
        clock = ManualClock()
        a: Broker = MemoryBroker(store, "a", LEASE, clock)
        b: Broker = MemoryBroker(store, "b", LEASE, clock)
        wipe = store.wipe

        async def wait(seconds: float) -> None:
            clock.advance(seconds)
    else:
        redis = RedisServer(tmp_path)
        redis.start()
        options = {"lease_seconds": LEASE, "max_events": 50, "max_turns": 3}
        a = RedisBroker(redis.url, "a", **options)  # type: ignore[arg-type]
        b = RedisBroker(redis.url, "b", **options)  # type: ignore[arg-type]
        server = redis

        def wipe() -> None:
            server.command("FLUSHALL")

        async def wait(seconds: float) -> None:
            assert seconds <= 2 * LEASE  # real time: keep the waits short
            await asyncio.sleep(seconds)

    heard_a, heard_b = Heard(), Heard()
    await a.start(heard_a)
    await b.start(heard_b)
    yield Pair(a, b, heard_a, heard_b, wipe, wait)
    await a.close()
    await b.close()
    if redis is not None:
        redis.stop(kill=True)


def rec(seq: int, text: str = "x", kind: str = "room") -> Record:
    return Record(seq, f'{{"seq":{seq},"t":"{text}"}}'.encode(), kind)  # type: ignore[arg-type]


async def started_turn(
    broker: Broker, epoch: str, turn: str = "t1", prompt: str | None = None
) -> int:
    """Claim the lease and store a turn.start at seq 1; returns the fence."""
    claim = await broker.claim(ROOM, epoch, 0, prompt)
    assert claim.status == "ok"
    await broker.append(ROOM, epoch, claim.fence, [rec(1)], started=(turn, prompt))
    return claim.fence


async def test_load_creates_the_epoch_once(pair: Pair) -> None:
    """The first load of a room sets its epoch; later loads, from any instance, keep it."""
    assert await pair.a.epoch(ROOM) is None
    first = await pair.a.load(ROOM, "e-a")
    second = await pair.b.load(ROOM, "e-b")
    assert await pair.b.epoch(ROOM) == "e-a"
    assert first.epoch == second.epoch == "e-a"
    assert (first.seq, first.turn_count, first.ended, first.records) == (0, 0, (), ())
    other = await pair.b.load(RoomName("elsewhere"), "e-other")
    assert other.epoch == "e-other"


async def test_one_lease_at_a_time_and_writes_need_it(pair: Pair) -> None:
    """One instance holds the lease; writes without it, or out of seq, are refused."""
    epoch = (await pair.a.load(ROOM, "e1")).epoch
    claim = await pair.a.claim(ROOM, epoch, 0, None)
    assert claim.status == "ok"
    assert (await pair.b.claim(ROOM, epoch, 0, None)).status == "busy"
    with pytest.raises(Fenced):
        await pair.b.append(ROOM, epoch, claim.fence + 1, [rec(1)])
    with pytest.raises(Fenced):  # not the next seq
        await pair.a.append(ROOM, epoch, claim.fence, [rec(2)])
    await pair.a.append(ROOM, epoch, claim.fence, [rec(1), rec(2)], started=("t1", None))
    loaded = await pair.b.load(ROOM, "ignored")
    assert [r.seq for r in loaded.records] == [1, 2]
    assert loaded.seq == 2
    assert loaded.turn_count == 1


async def test_a_stale_replica_is_told_the_seq(pair: Pair) -> None:
    """A claim from a replica behind the room says where the room is."""
    epoch = (await pair.a.load(ROOM, "e1")).epoch
    fence = await started_turn(pair.a, epoch)
    await pair.a.append(ROOM, epoch, fence, [rec(2, "end")], ended=b'{"kind":"room"}')
    claim = await pair.b.claim(ROOM, epoch, 0, None)
    assert (claim.status, claim.seq) == ("stale", 2)
    assert (await pair.b.claim(ROOM, epoch, 2, None)).status == "ok"


async def test_reads_after_a_seq_and_gone_when_trimmed_or_wrong(pair: Pair) -> None:
    """Reads return what follows a seq, or None when it is trimmed, ahead or on another epoch."""
    epoch = (await pair.a.load(ROOM, "e1")).epoch
    fence = await started_turn(pair.a, epoch)
    await pair.a.append(ROOM, epoch, fence, [rec(s) for s in range(2, 121)])
    tail = await pair.b.read(ROOM, epoch, 110)
    assert tail is not None
    assert [r.seq for r in tail] == list(range(111, 121))
    assert await pair.b.read(ROOM, epoch, 120) == ()
    assert await pair.b.read(ROOM, epoch, 0) is None  # trimmed to 50 events
    assert await pair.b.read(ROOM, epoch, 121) is None  # ahead of the room
    assert await pair.b.read(ROOM, "another-epoch", 110) is None
    loaded = await pair.b.load(ROOM, "x")
    assert len(loaded.records) == 50
    assert loaded.records[-1].seq == 120
    assert [r.seq for r in loaded.records] == list(range(loaded.records[0].seq, 121))


async def test_live_records_reach_listening_instances_once(pair: Pair) -> None:
    """Listening instances get each record once (reference counted); others get none."""
    epoch = (await pair.a.load(ROOM, "e1")).epoch
    await pair.b.listen(ROOM)
    await pair.b.listen(ROOM)  # reference counted: still one subscription
    fence = await started_turn(pair.a, epoch)
    await pair.a.append(ROOM, epoch, fence, [rec(2, "é 🚀", "tap")])
    await pair.heard_b.until(lambda: len(pair.heard_b.records) >= 2)
    await asyncio.sleep(0.1)  # time for a duplicate to show up, if there were one
    assert [(r.seq, r.kind) for _, _, r in pair.heard_b.records] == [(1, "room"), (2, "tap")]
    assert pair.heard_b.records[1][2].data == rec(2, "é 🚀").data
    assert {e for _, e, _ in pair.heard_b.records} == {epoch}
    assert pair.heard_a.records == []  # a does not listen
    await pair.b.unlisten(ROOM)
    await pair.a.append(ROOM, epoch, fence, [rec(3)])
    await pair.heard_b.until(lambda: len(pair.heard_b.records) >= 3)
    await pair.b.unlisten(ROOM)
    await pair.a.append(ROOM, epoch, fence, [rec(4)])
    await asyncio.sleep(0.3)  # time for it to arrive, if it could
    assert len(pair.heard_b.records) == 3


async def test_prompt_ids_are_shared(pair: Pair) -> None:
    """A prompt id used on one instance is known on the others."""
    epoch = (await pair.a.load(ROOM, "e1")).epoch
    await started_turn(pair.a, epoch, "t-first", prompt="p-1")
    claim = await pair.b.claim(ROOM, epoch, 1, "p-1")
    assert (claim.status, claim.turn, claim.seq) == ("known", "t-first", 1)
    assert (await pair.b.claim(ROOM, epoch, 1, "p-2")).status == "busy"


async def test_a_lease_runs_out_unless_renewed(pair: Pair) -> None:
    """A renewed lease holds; an expired one fences its holder and lets another end the turn."""
    epoch = (await pair.a.load(ROOM, "e1")).epoch
    fence = await started_turn(pair.a, epoch)
    for _ in range(3):
        await pair.wait(LEASE / 3)
        assert await pair.a.renew(ROOM, fence)
    assert (await pair.b.steal(ROOM, epoch, "t1", force=False)).status == "alive"
    await pair.wait(LEASE + 0.2)
    assert not await pair.a.renew(ROOM, fence)
    with pytest.raises(Fenced):
        await pair.a.append(ROOM, epoch, fence, [rec(2)])
    orphan = await pair.b.claim(ROOM, epoch, 1, None)
    assert (orphan.status, orphan.turn) == ("orphan", "t1")
    steal = await pair.b.steal(ROOM, epoch, "t1", force=False)
    assert steal.status == "ok"
    assert steal.fence > fence
    assert steal.seq == 1
    await pair.b.append(ROOM, epoch, steal.fence, [rec(2, "truncated")], ended=b"{}")
    assert (await pair.a.claim(ROOM, epoch, 2, None)).status == "ok"


async def test_a_forced_steal_fences_the_holder(pair: Pair) -> None:
    """Cancelling elsewhere takes the lease by force: the old holder can no longer write."""
    epoch = (await pair.a.load(ROOM, "e1")).epoch
    fence = await started_turn(pair.a, epoch)
    assert (await pair.b.steal(ROOM, epoch, "t-other", force=True)).status == "gone"
    steal = await pair.b.steal(ROOM, epoch, "t1", force=True)
    assert steal.status == "ok"
    with pytest.raises(Fenced):
        await pair.a.append(ROOM, epoch, fence, [rec(2)])
    assert not await pair.a.renew(ROOM, fence)
    await pair.b.append(ROOM, epoch, steal.fence, [rec(2, "cancelled")], ended=b'{"t":2}')
    assert (await pair.b.steal(ROOM, epoch, "t1", force=True)).status == "gone"
    loaded = await pair.a.load(ROOM, "x")
    assert loaded.ended == (b'{"t":2}',)


async def test_ended_turns_are_kept_newest_last_and_bounded(pair: Pair) -> None:
    """Ended turns are stored oldest first, at most max_turns."""
    epoch = (await pair.a.load(ROOM, "e1")).epoch
    seq = 0
    for n in range(5):
        claim = await pair.a.claim(ROOM, epoch, seq, None)
        assert claim.status == "ok"
        await pair.a.append(ROOM, epoch, claim.fence, [rec(seq + 1)], started=(f"t{n}", None))
        await pair.a.append(ROOM, epoch, claim.fence, [rec(seq + 2)], ended=f"turn {n}".encode())
        seq += 2
    loaded = await pair.b.load(ROOM, "x")
    assert loaded.ended == (b"turn 2", b"turn 3", b"turn 4")  # max_turns=3
    assert loaded.turn_count == 5


async def test_release_frees_an_unused_lease(pair: Pair) -> None:
    """Only the holder can give a lease back."""
    epoch = (await pair.a.load(ROOM, "e1")).epoch
    claim = await pair.a.claim(ROOM, epoch, 0, None)
    await pair.b.release(ROOM, claim.fence + 7)  # not the holder: nothing happens
    assert (await pair.b.claim(ROOM, epoch, 0, None)).status == "busy"
    await pair.a.release(ROOM, claim.fence)
    assert (await pair.b.claim(ROOM, epoch, 0, None)).status == "ok"


async def test_viewers_are_summed_over_instances(pair: Pair) -> None:
    """Viewer counts add up over instances; a closed instance drops out."""
    await pair.a.load(ROOM, "e1")
    await pair.a.listen(ROOM)
    await pair.b.listen(ROOM)
    assert await pair.a.set_viewers(ROOM, 3) == 3
    assert await pair.b.set_viewers(ROOM, 4) == 7
    await pair.heard_a.until(lambda: ROOM in pair.heard_a.presence)
    assert await pair.a.viewers(ROOM) == 7
    assert await pair.b.set_viewers(ROOM, 0) == 3
    await pair.b.close()  # a closed instance's count is gone (and so is an expired one's)
    assert await pair.a.viewers(ROOM) == 3


async def test_a_wiped_store_means_a_new_epoch_and_refused_writes(pair: Pair) -> None:
    """After a wipe, old writes are refused and the room starts on a new epoch."""
    epoch = (await pair.a.load(ROOM, "e1")).epoch
    fence = await started_turn(pair.a, epoch)
    pair.wipe()
    assert await pair.b.epoch(ROOM) is None
    with pytest.raises(Fenced):
        await pair.a.append(ROOM, epoch, fence, [rec(2)])
    assert await pair.b.read(ROOM, epoch, 0) is None
    assert (await pair.b.claim(ROOM, epoch, 1, None)).status == "epoch"
    assert (await pair.b.steal(ROOM, epoch, "t1", force=True)).status == "epoch"
    fresh = await pair.b.load(ROOM, "e2")
    assert (fresh.epoch, fresh.seq, fresh.records) == ("e2", 0, ())


async def test_find_reads_a_room_without_making_one(pair: Pair) -> None:
    """``find`` answers None for a room the broker has not got, and creates nothing."""
    assert await pair.a.find(ROOM) is None
    assert await pair.b.epoch(ROOM) is None
    epoch = (await pair.a.load(ROOM, "e1")).epoch
    await started_turn(pair.a, epoch)
    found = await pair.b.find(ROOM)
    assert found is not None
    assert (found.epoch, found.seq, [r.seq for r in found.records]) == ("e1", 1, [1])
    pair.wipe()
    assert await pair.b.find(ROOM) is None
    assert await pair.b.epoch(ROOM) is None


def a_seed(epoch: str = "e2", *, streaming: str | None = "t2") -> Seed:
    """A room at seq 6 with two ended turns and a live turn (start at 5, text at 6)."""
    return Seed(
        epoch=epoch,
        seq=6,
        turn_count=3,
        ended=(b'{"id":"t0"}', b'{"id":"t1"}'),
        records=(rec(5, "start"), rec(6, "text")) if streaming else (),
        streaming=streaming,
    )


async def test_a_wiped_room_is_seeded_once_with_its_live_turn(pair: Pair) -> None:
    """A seed is stored only where the broker has no history; its lease is the live turn's."""
    epoch = (await pair.a.load(ROOM, "e1")).epoch
    old_fence = await started_turn(pair.a, epoch)
    assert await pair.a.seed(ROOM, a_seed(), lease=True) is None  # the room has a history
    pair.wipe()
    fence = await pair.a.seed(ROOM, a_seed(), lease=True)
    assert fence is not None
    assert fence != 0
    assert await pair.b.seed(ROOM, a_seed("e3"), lease=False) is None  # stored first by a
    found = await pair.b.find(ROOM)
    assert found is not None
    assert (found.epoch, found.seq, found.turn_count) == ("e2", 6, 3)
    assert found.ended == (b'{"id":"t0"}', b'{"id":"t1"}')
    assert [r.data for r in found.records] == [rec(5, "start").data, rec(6, "text").data]
    # The live turn streams on under the new lease; the old fence writes nothing.
    with pytest.raises(Fenced):
        await pair.a.append(ROOM, epoch, old_fence, [rec(7)])
    assert (await pair.b.claim(ROOM, "e2", 6, None)).status == "busy"
    await pair.a.append(ROOM, "e2", fence, [rec(7, "end")], ended=b'{"id":"t2"}')
    assert [r.seq for r in (await pair.b.read(ROOM, "e2", 5) or ())] == [6, 7]
    claim = await pair.b.claim(ROOM, "e2", 7, None)
    assert claim.status == "ok"


async def test_an_idle_seed_takes_no_lease_and_overwrites_an_empty_room(pair: Pair) -> None:
    """A room made empty again (a load after a wipe) still takes a seed; no lease is held."""
    await pair.a.load(ROOM, "e1")
    pair.wipe()
    await pair.b.load(ROOM, "fresh")  # an instance that knew nothing made an empty room
    assert await pair.a.seed(ROOM, a_seed(streaming=None), lease=False) == 0
    found = await pair.b.find(ROOM)
    assert found is not None
    assert (found.epoch, found.seq, found.records) == ("e2", 6, ())
    assert (await pair.b.claim(ROOM, "e2", 6, None)).status == "ok"


async def test_a_retried_write_is_stored_once(pair: Pair) -> None:
    """A write whose reply was lost may be sent again: it is not stored twice."""
    epoch = (await pair.a.load(ROOM, "e1")).epoch
    fence = await started_turn(pair.a, epoch)
    batch = [rec(2, "a"), rec(3, "b")]
    await pair.a.append(ROOM, epoch, fence, batch)
    await pair.a.append(ROOM, epoch, fence, batch)
    await pair.a.append(ROOM, epoch, fence, [rec(4, "end")], ended=b"{}")
    await pair.a.append(ROOM, epoch, fence, [rec(4, "end")], ended=b"{}")  # lease freed already
    with pytest.raises(Fenced):  # not the same write: refused
        await pair.a.append(ROOM, epoch, fence, [rec(3, "other")])
    loaded = await pair.b.load(ROOM, "x")
    assert [r.seq for r in loaded.records] == [1, 2, 3, 4]
    assert loaded.ended == (b"{}",)


async def test_memory_prompt_ids_and_leases_follow_the_clock() -> None:
    """The memory broker times leases and prompt ids by its clock alone.

    They end at their ends, not a moment before (Redis keeps an hour of prompt ids by TTL, too
    long to wait for here).
    """
    clock = ManualClock()
    broker = MemoryBroker(MemoryStore(), "a", LEASE, clock)
    epoch = (await broker.load(ROOM, "e1")).epoch
    fence = await started_turn(broker, epoch, "t-first", prompt="p-1")
    clock.advance(LEASE - 0.01)
    assert (await broker.claim(ROOM, epoch, 1, None)).status == "busy"
    clock.advance(0.02)
    assert (await broker.claim(ROOM, epoch, 1, None)).status == "orphan"
    assert not await broker.renew(ROOM, fence)
    steal = await broker.steal(ROOM, epoch, "t-first", force=False)
    await broker.append(ROOM, epoch, steal.fence, [rec(2)], ended=b"{}")
    clock.advance(PROMPT_ID_SECONDS - LEASE - 0.02)
    assert (await broker.claim(ROOM, epoch, 2, "p-1")).status == "known"
    clock.advance(0.02)
    assert (await broker.claim(ROOM, epoch, 2, "p-1")).status == "ok"


async def test_memory_writer_does_not_hear_its_own_records() -> None:
    """One process, one store: the writer published its records already; the others hear them."""
    store, clock = MemoryStore(), ManualClock()
    a, b = MemoryBroker(store, "a", LEASE, clock), MemoryBroker(store, "b", LEASE, clock)
    heard_a, heard_b = Heard(), Heard()
    await a.start(heard_a)
    await b.start(heard_b)
    await a.listen(ROOM)
    await b.listen(ROOM)
    epoch = (await a.load(ROOM, "e1")).epoch
    await started_turn(a, epoch)
    assert [r.seq for _, _, r in heard_b.records] == [1]
    assert (heard_a.records, a.events_heard, b.events_heard) == ([], 0, 1)


async def test_the_upstream_position_is_kept_with_the_turn_until_it_ends(pair: Pair) -> None:
    """The position written with a turn's records is the last one, and goes when it ends."""
    epoch = (await pair.a.load(ROOM, "e1")).epoch
    assert await pair.b.position(ROOM) is None
    fence = await started_turn(pair.a, epoch)
    assert await pair.b.position(ROOM) is None
    await pair.a.append(ROOM, epoch, fence, [rec(2)], position=b"at 2")
    await pair.a.append(ROOM, epoch, fence, [rec(3)])  # no news: the last one stays
    assert await pair.b.position(ROOM) == b"at 2"
    await pair.a.append(ROOM, epoch, fence, [rec(4)], position=b"at 4")
    assert await pair.b.position(ROOM) == b"at 4"
    with pytest.raises(Fenced):  # a refused write changes nothing
        await pair.b.append(ROOM, epoch, fence + 1, [rec(5)], position=b"nope")
    assert await pair.b.position(ROOM) == b"at 4"
    await pair.a.append(ROOM, epoch, fence, [rec(5)], ended=b"turn")
    assert await pair.b.position(ROOM) is None
