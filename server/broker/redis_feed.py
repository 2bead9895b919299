"""The Redis broker's live feed: one pub/sub connection per instance.

It is subscribed only to the rooms this instance listens to (reference counted), so each
published event crosses Redis once per listening instance, never once per viewer. When the
connection drops, it reconnects with backoff, subscribes again and tells the listener, which
reads what it missed from the streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from server.core.messages import TurnKind
from server.core.types import RoomName

from .base import BrokerListener, Record

log = logging.getLogger(__name__)

RECONNECT_MAX_SECONDS = 5.0
SUBSCRIBE_WAIT_SECONDS = 2.0


def text_of(value: object) -> str:
    """A Redis reply value as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def kind_of(value: bytes) -> TurnKind:
    """A stored record's kind (``k`` field or the published kind word)."""
    return "tap" if value == b"tap" else "room"


class RedisFeed:
    """Live records and presence from the rooms this instance listens to."""

    def __init__(self, redis: aioredis.Redis, *, prefix: str, instance: str) -> None:
        self.prefix = prefix
        self.instance = instance
        self.heard = 0  # events received (tests and the benchmark read it)
        self._redis = redis
        self._listener: BrokerListener | None = None
        self._listening: dict[RoomName, int] = {}
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._active: set[str] = set()  # channels Redis confirmed on the live connection
        self._active_changed = asyncio.Event()

    def channel(self, room: RoomName) -> str:
        """The pub/sub channel of ``room``."""
        return f"{self.prefix}:{{{room}}}"

    @property
    def rooms(self) -> list[RoomName]:
        """The rooms listened to now."""
        return list(self._listening)

    def start(self, listener: BrokerListener) -> None:
        """Start reading in the background, delivering to ``listener``."""
        self._listener = listener
        self._reader = asyncio.create_task(self._read_forever(), name="broker-reader")

    async def stop_reading(self) -> None:
        """Stop the background reader (the rooms stay counted, for ``close``)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def close(self) -> None:
        """Close the pub/sub connection."""
        with contextlib.suppress(RedisError, OSError):
            if self._pubsub is not None:
                await self._pubsub.aclose()

    async def listen(self, room: RoomName) -> None:
        """Subscribe (the first time) and return once Redis confirmed it.

        Nothing published after this returns is missed (bounded: a Redis that does not answer
        leaves the listener to read what it missed later).
        """
        count = self._listening.get(room, 0)
        self._listening[room] = count + 1
        channel = self.channel(room)
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
        await self._subscribe(self.channel(room), subscribe=False)

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
        channels = [self.channel(room) for room in self._listening]
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
                self._dispatch(text_of(message["channel"]), message["data"])
            elif kind in ("subscribe", "unsubscribe"):
                channel = text_of(message["channel"])
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
                self.heard += 1
                listener.on_record(
                    room, parts[1].decode(), Record(int(parts[3]), parts[4], kind_of(parts[2]))
                )
                return
        elif data.startswith(b"P "):
            if data[2:].decode(errors="replace") != self.instance:
                listener.on_presence(room)
            return
        log.warning("redis: ignored a malformed message on %s", channel)
