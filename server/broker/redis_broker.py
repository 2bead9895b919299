"""The Redis broker (``redis://`` and ``rediss://``): several instances share rooms.

Writes are Lua scripts (``redis_scripts``), so every check-and-write is atomic. Each event is
published once; live events arrive on one pub/sub connection per instance (``redis_feed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from server.core.types import RoomName

from . import redis_scripts as lua
from .base import (
    Broker,
    BrokerListener,
    BrokerUnavailable,
    Claim,
    Fenced,
    Loaded,
    Record,
    Seed,
    claim_status,
)
from .memory import PROMPT_ID_SECONDS
from .redis_feed import RedisFeed, kind_of, text_of

log = logging.getLogger(__name__)

ROOM_TTL_SECONDS = 7 * 86400


def _records(entries: Sequence[Any]) -> tuple[Record, ...]:
    """Stream entries ``[id, [field, value, ...]]`` as records."""
    out: list[Record] = []
    for entry_id, flat in entries:
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        seq = int(text_of(entry_id).split("-", 1)[0])
        out.append(Record(seq, fields[b"d"], kind_of(fields.get(b"k", b"room"))))
    return tuple(out)


class RedisBroker(Broker):
    """One instance's connection to the shared Redis."""

    def __init__(
        self,
        url: str,
        instance: str,
        *,
        prefix: str = "fanout",
        lease_seconds: float = 5.0,
        max_events: int = 10_000,
        max_turns: int = 20,
    ) -> None:
        self.url = url
        self.instance = instance
        self.prefix = prefix
        self.lease_seconds = lease_seconds
        self.max_events = max(1, max_events)
        self.max_turns = max(1, max_turns)
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=max(2.0, lease_seconds),
            socket_connect_timeout=2.0,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        )
        self._scripts = {
            name: self._redis.register_script(getattr(lua, name))
            for name in (
                "LOAD",
                "SEED",
                "READ",
                "CLAIM",
                "STEAL",
                "APPEND",
                "RENEW",
                "RELEASE",
                "VIEWERS",
            )
        }
        self._feed = RedisFeed(self._redis, prefix=prefix, instance=instance)

    @property
    def events_heard(self) -> int:  # type: ignore[override]
        """Events received on pub/sub (tests and the benchmark read it)."""
        return self._feed.heard

    # --- keys ------------------------------------------------------------------------------

    def _key(self, room: RoomName, part: str) -> str:
        return f"{self.prefix}:{{{room}}}:{part}"

    async def _call(self, name: str, keys: Sequence[str], args: Sequence[bytes | str | int]) -> Any:
        try:
            return await self._scripts[name](keys=list(keys), args=list(args))
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc

    # --- lifecycle and the live feed ------------------------------------------------------

    async def start(self, listener: BrokerListener) -> None:
        """Connect and start delivering live records to ``listener``."""
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            log.warning(
                "redis at %s is not reachable yet (%s); retrying in the background", self.url, exc
            )
        self._feed.start(listener)

    async def close(self) -> None:
        """Stop delivering and disconnect (this instance's viewer counts are dropped)."""
        await self._feed.stop_reading()
        with contextlib.suppress(RedisError, OSError, BrokerUnavailable):
            for room in self._feed.rooms:
                await self._viewers(room, 0, True)
        await self._feed.close()
        await self._redis.aclose()

    async def reachable(self) -> bool:
        """Whether the broker answers now (``/healthz``)."""
        try:
            async with asyncio.timeout(1.0):
                return bool(await self._redis.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def listen(self, room: RoomName) -> None:
        """Subscribe (the first time) and return once Redis confirmed it."""
        await self._feed.listen(room)

    async def unlisten(self, room: RoomName) -> None:
        """One listener fewer; at zero the instance stops receiving the room."""
        await self._feed.unlisten(room)

    # --- the room's store -----------------------------------------------------------------

    async def load(self, room: RoomName, new_epoch: str) -> Loaded:
        """The room as kept; ``new_epoch`` becomes its epoch when it has none."""
        loaded = await self._load(room, new_epoch)
        if loaded is None:  # the script creates the room it does not find
            raise BrokerUnavailable(f"room {room}: Redis did not create it")
        return loaded

    async def find(self, room: RoomName) -> Loaded | None:
        """The room as kept, or None when Redis has none (it is not created)."""
        return await self._load(room, "")

    async def _load(self, room: RoomName, new_epoch: str) -> Loaded | None:
        keys = [self._key(room, p) for p in ("meta", "events", "turns", "lease")]
        reply = await self._call("LOAD", keys, [new_epoch])
        if not reply:
            return None
        epoch, seq, turns, ended, entries = reply
        return Loaded(
            epoch=text_of(epoch),
            seq=int(seq),
            turn_count=int(turns),
            ended=tuple(ended),
            records=_records(entries),
        )

    async def seed(self, room: RoomName, seed: Seed, *, lease: bool) -> int | None:
        """Store ``seed`` as the room's new epoch unless the room has a history again."""
        keys = [self._key(room, p) for p in ("meta", "events", "turns", "lease")]
        args: list[bytes | str | int] = [
            seed.epoch,
            seed.seq,
            seed.turn_count,
            seed.streaming or "",
            "1" if lease else "0",
            int(self.lease_seconds * 1000),
            ROOM_TTL_SECONDS,
            len(seed.ended),
            *seed.ended,
            len(seed.records),
        ]
        for record in seed.records:
            args += [record.seq, record.kind, record.data]
        reply = await self._call("SEED", keys, args)
        return int(reply[1]) if text_of(reply[0]) == "ok" else None

    async def epoch(self, room: RoomName) -> str | None:
        """The room's epoch now (None when the broker has no such room, e.g. wiped)."""
        try:
            value = await self._redis.hget(self._key(room, "meta"), "epoch")
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        return None if value is None else text_of(value)

    async def position(self, room: RoomName) -> bytes | None:
        """The streaming turn's upstream position as last appended, None when none is kept."""
        try:
            value = await self._redis.hget(self._key(room, "meta"), "position")
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        return value if value is None or isinstance(value, bytes) else value.encode()

    async def read(self, room: RoomName, epoch: str, after: int) -> tuple[Record, ...] | None:
        """Every record after seq ``after`` on ``epoch``, or None when some are gone."""
        keys = [self._key(room, "meta"), self._key(room, "events")]
        reply = await self._call("READ", keys, [epoch, after])
        return _records(reply[1]) if text_of(reply[0]) == "ok" else None

    @staticmethod
    def _claim(reply: Sequence[Any]) -> Claim:
        status = claim_status(text_of(reply[0]))
        if status == "ok":
            return Claim("ok", fence=int(reply[1]), seq=int(reply[2]))
        if status == "known":
            known_turn, known_seq = text_of(reply[1]).split(" ", 1)
            return Claim("known", seq=int(known_seq), turn=known_turn)
        seq = int(reply[1]) if len(reply) > 1 else 0
        turn = text_of(reply[2]) if len(reply) > 2 and reply[2] else None
        return Claim(status, seq=seq, turn=turn)

    async def claim(self, room: RoomName, epoch: str, seq: int, prompt_id: str | None) -> Claim:
        """Take the room's turn lease to start a turn after ``seq``."""
        keys = [
            self._key(room, "meta"),
            self._key(room, "lease"),
            self._key(room, f"prompt:{prompt_id or ''}"),
        ]
        args: list[bytes | str | int] = [
            epoch,
            seq,
            int(self.lease_seconds * 1000),
            "1" if prompt_id else "0",
        ]
        return self._claim(await self._call("CLAIM", keys, args))

    async def steal(self, room: RoomName, epoch: str, turn: str, *, force: bool) -> Claim:
        """Take the lease of the streaming ``turn`` to end it."""
        keys = [self._key(room, "meta"), self._key(room, "lease")]
        args = [epoch, turn, "1" if force else "0", int(self.lease_seconds * 1000)]
        claim = self._claim(await self._call("STEAL", keys, args))
        return Claim(claim.status, claim.fence, claim.seq, turn) if claim.status == "ok" else claim

    async def append(
        self,
        room: RoomName,
        epoch: str,
        fence: int,
        records: Sequence[Record],
        *,
        started: tuple[str, str | None] | None = None,
        ended: bytes | None = None,
        position: bytes | None = None,
    ) -> None:
        """Store and publish consecutive records after the room's seq, and renew the lease."""
        turn, prompt_id = started if started is not None else ("", None)
        keys = [
            self._key(room, "meta"),
            self._key(room, "lease"),
            self._key(room, "events"),
            self._key(room, "turns"),
            self._key(room, f"prompt:{prompt_id or ''}"),
        ]
        args: list[bytes | str | int] = [
            epoch,
            fence,
            int(self.lease_seconds * 1000),
            self.max_events,
            self.max_turns,
            self._feed.channel(room),
            int(PROMPT_ID_SECONDS),
            turn,
            "1" if prompt_id else "0",
            ended if ended is not None else b"",
            ROOM_TTL_SECONDS,
            len(records),
        ]
        for record in records:
            args += [record.seq, record.kind, record.data]
        args.append(position if position is not None else b"")
        reply = await self._call("APPEND", keys, args)
        status = text_of(reply[0])
        if status != "ok":
            raise Fenced(f"append refused: {status}")

    async def renew(self, room: RoomName, fence: int) -> bool:
        """Extend the lease; False when it is no longer this fence's."""
        reply = await self._call(
            "RENEW", [self._key(room, "lease")], [fence, int(self.lease_seconds * 1000)]
        )
        return bool(reply)

    async def release(self, room: RoomName, fence: int) -> None:
        """Give the lease back (a claim that started nothing)."""
        await self._call("RELEASE", [self._key(room, "lease")], [fence])

    # --- presence --------------------------------------------------------------------------

    async def set_viewers(self, room: RoomName, count: int, *, announce: bool = True) -> int:
        """Record this instance's viewer count (``announce``: tell the other instances)."""
        return await self._viewers(room, count, announce)

    async def viewers(self, room: RoomName) -> int:
        """The room's viewers summed over live instances."""
        return await self._viewers(room, -1, False)

    async def _viewers(self, room: RoomName, count: int, announce: bool) -> int:
        alive_ms = int(self.lease_seconds * 3000)
        args: list[bytes | str | int] = [self.instance, count, alive_ms, self._feed.channel(room)]
        args.append("1" if announce else "0")
        return int(await self._call("VIEWERS", [self._key(room, "viewers")], args))
