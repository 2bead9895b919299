"""The Redis broker (``redis://`` and ``rediss://``): several instances share rooms.

Writes are Lua scripts (``redis_scripts``), so every check-and-write is atomic. Live events
arrive on ONE pub/sub connection per instance, subscribed only to the rooms this instance
listens to (reference counted); each event is published once, so it crosses Redis once per
listening instance, never once per viewer. When that connection drops, it reconnects with
backoff, subscribes again and tells the hub, which reads what it missed from the streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from server.core.messages import TurnKind
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

log = logging.getLogger(__name__)

RECONNECT_MAX_SECONDS = 5.0
SUBSCRIBE_WAIT_SECONDS = 2.0
ROOM_TTL_SECONDS = 7 * 86400


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _kind(value: bytes) -> TurnKind:
    return "tap" if value == b"tap" else "room"


def _records(entries: Sequence[Any]) -> tuple[Record, ...]:
    """Stream entries ``[id, [field, value, ...]]`` as records."""
    out: list[Record] = []
    for entry_id, flat in entries:
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        seq = int(_text(entry_id).split("-", 1)[0])
        out.append(Record(seq, fields[b"d"], _kind(fields.get(b"k", b"room"))))
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
        self.events_heard = 0  # events received on pub/sub (tests and the benchmark read it)
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
        self._listener: BrokerListener | None = None
        self._listening: dict[RoomName, int] = {}
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._active: set[str] = set()  # channels Redis confirmed on the live connection
        self._active_changed = asyncio.Event()

    # --- keys ------------------------------------------------------------------------------

    def _key(self, room: RoomName, part: str) -> str:
        return f"{self.prefix}:{{{room}}}:{part}"

    def _channel(self, room: RoomName) -> str:
        return f"{self.prefix}:{{{room}}}"

    async def _call(self, name: str, keys: Sequence[str], args: Sequence[bytes | str | int]) -> Any:
        try:
            return await self._scripts[name](keys=list(keys), args=list(args))
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc

    # --- lifecycle and the live feed ------------------------------------------------------

    async def start(self, listener: BrokerListener) -> None:
        """Connect and start delivering live records to ``listener``."""
        self._listener = listener
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            log.warning(
                "redis at %s is not reachable yet (%s); retrying in the background", self.url, exc
            )
        self._reader = asyncio.create_task(self._read_forever(), name="broker-reader")

    async def close(self) -> None:
        """Stop delivering and disconnect (this instance's viewer counts are dropped)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(RedisError, OSError):
            for room in list(self._listening):
                await self._viewers(room, 0, True)
        with contextlib.suppress(RedisError, OSError, BrokerUnavailable):
            if self._pubsub is not None:
                await self._pubsub.aclose()
        await self._redis.aclose()

    async def reachable(self) -> bool:
        """Whether the broker answers now (``/healthz``)."""
        try:
            async with asyncio.timeout(1.0):
                return bool(await self._redis.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def listen(self, room: RoomName) -> None:
        """Subscribe (the first time) and return once Redis confirmed it.

        Nothing published after this returns is missed (bounded: a Redis that does not answer
        leaves the hub to read what it missed later).
        """
        count = self._listening.get(room, 0)
        self._listening[room] = count + 1
        channel = self._channel(room)
        if count == 0:
            await self._subscribe(channel, subscribe=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SUBSCRIBE_WAIT_SECONDS):
                while channel not in self._active and room in self._listening:
                    self._active_changed.clear()
                    await self._active_changed.wait()

    async def unlisten(self, room: RoomName) -> None:
        """One listener fewer; at zero the instance stops receiving the room."""
        count = self._listening.get(room, 0) - 1
        if count > 0:
            self._listening[room] = count
            return
        self._listening.pop(room, None)
        await self._subscribe(self._channel(room), subscribe=False)

    async def _subscribe(self, channel: str, *, subscribe: bool) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            self._wake.set()  # the reader subscribes to every listened room when it connects
            return
        try:
            if subscribe:
                await pubsub.subscribe(channel)
                self._wake.set()
            else:
                await pubsub.unsubscribe(channel)
        except (RedisError, OSError) as exc:  # the reader reconnects and subscribes again
            log.info("redis: (un)subscribe %s failed: %s", channel, exc)

    async def _read_forever(self) -> None:
        delay = 0.1
        connected_before = False
        while True:
            try:
                await self._read_once(reconnected=connected_before)
            except (RedisError, OSError) as exc:
                log.warning("redis pub/sub lost (%s); reconnecting in %.1fs", exc, delay)
            pubsub, self._pubsub = self._pubsub, None
            if pubsub is not None:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            connected_before = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def _read_once(self, *, reconnected: bool) -> None:
        while not self._listening:  # nothing to subscribe to: PubSub needs a channel
            self._wake.clear()
            await self._wake.wait()
        self._active.clear()
        pubsub = self._redis.pubsub()
        channels = [self._channel(room) for room in self._listening]
        await pubsub.subscribe(*channels)
        self._pubsub = pubsub
        if reconnected:
            log.info("redis pub/sub back: %d room(s) subscribed", len(channels))
        if self._listener is not None:
            self._listener.on_reconnect()  # read what was published while not subscribed
        while True:
            if pubsub.connection is None or not pubsub.subscribed:
                self._wake.clear()
                await self._wake.wait()
                continue
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            kind = message.get("type")
            if kind == "message":
                self._dispatch(_text(message["channel"]), message["data"])
            elif kind in ("subscribe", "unsubscribe"):
                channel = _text(message["channel"])
                if kind == "subscribe":
                    self._active.add(channel)
                else:
                    self._active.discard(channel)
                self._active_changed.set()

    def _dispatch(self, channel: str, data: bytes) -> None:
        listener = self._listener
        room = RoomName(channel[len(self.prefix) + 2 : -1])
        if listener is None or room not in self._listening:
            return
        if data.startswith(b"E "):
            parts = data.split(b" ", 4)
            if len(parts) == 5 and parts[3].isdigit():
                self.events_heard += 1
                listener.on_record(
                    room, parts[1].decode(), Record(int(parts[3]), parts[4], _kind(parts[2]))
                )
                return
        elif data.startswith(b"P "):
            if data[2:].decode(errors="replace") != self.instance:
                listener.on_presence(room)
            return
        log.warning("redis: ignored a malformed message on %s", channel)

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
            epoch=_text(epoch),
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
        return int(reply[1]) if _text(reply[0]) == "ok" else None

    async def epoch(self, room: RoomName) -> str | None:
        """The room's epoch now (None when the broker has no such room, e.g. wiped)."""
        try:
            value = await self._redis.hget(self._key(room, "meta"), "epoch")
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        return None if value is None else _text(value)

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
        return _records(reply[1]) if _text(reply[0]) == "ok" else None

    @staticmethod
    def _claim(reply: Sequence[Any]) -> Claim:
        status = claim_status(_text(reply[0]))
        if status == "ok":
            return Claim("ok", fence=int(reply[1]), seq=int(reply[2]))
        if status == "known":
            known_turn, known_seq = _text(reply[1]).split(" ", 1)
            return Claim("known", seq=int(known_seq), turn=known_turn)
        seq = int(reply[1]) if len(reply) > 1 else 0
        turn = _text(reply[2]) if len(reply) > 2 and reply[2] else None
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
            self._channel(room),
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
        status = _text(reply[0])
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
        args: list[bytes | str | int] = [self.instance, count, alive_ms, self._channel(room)]
        args.append("1" if announce else "0")
        return int(await self._call("VIEWERS", [self._key(room, "viewers")], args))
