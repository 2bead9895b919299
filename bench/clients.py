"""Load-generator clients: they count deltas and measure latency from ``mock-stamp`` tokens.

- ``WireClient``: a WebSocket viewer as a bare asyncio protocol (fanout, websockets.broadcast,
  the raw floor), a probe or a sink (see ``Tally``); with ``sio=True`` a socket.io viewer
  (engine.io v4 over WebSocket: ``0`` open, ``40`` namespace connect, ``2``/``3`` ping and
  pong, ``42[...]`` events). An aiohttp ``ws_connect`` viewer wakes a task per message;
  against servers that write one frame per socket at a time it saturated the generator's
  core near 100k frames/s, so it measured the generator, not the server. python-socketio's
  AsyncClient is heavier still.
- ``SseClient``: one aiohttp streaming GET (the per-client SSE proxy): one request, one turn.
- ``StalledClient``: connects, completes the WebSocket handshake, then never reads again.

Latency is receipt time minus the stamp the mock wrote into the token when it sent it (same
machine, same clock). A delta that merges several tokens yields one sample per token, and
deliveries count tokens, so merging neither hides nor inflates anything.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import os
import re
import socket
import time
from array import array

import aiohttp

_STAMP = re.compile(rb"\d{9,11}\.\d{6}")
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


# A sink reads only when this much has arrived (SO_RCVLOWAT) while a turn streams. Each sink
# gets its own threshold, spread evenly over 2-6 kB (mean 4 kB): with one threshold for all,
# every sink crossed it on the same round and the generator parsed all their frames at once,
# holding up the probes behind it (a tail of the generator's, not of the server under test).
SINK_LOWAT_MIN, SINK_LOWAT_MAX = 2048, 6144
_lowats = itertools.cycle(range(SINK_LOWAT_MIN, SINK_LOWAT_MAX + 1, 64))


class Tally:
    """What the healthy viewers received during one turn.

    Probes read every frame as it arrives and give the latencies; sinks (all other viewers)
    read in batches of 2-6 kB (``SINK_LOWAT_MIN`` to ``SINK_LOWAT_MAX``), so that one generator
    core can keep thousands of viewers drained. Both count every token they receive.
    """

    def __init__(self, readers: int, probes: int, stamped: bool = True) -> None:
        self.readers = readers
        self.probes = probes
        self.stamped = stamped
        self.tokens = 0
        self.frames = 0
        self.bytes = 0
        self.first = math.inf
        self.last = 0.0
        self.ended = 0
        self.probes_ended = 0
        self.latencies = array("d")
        self.done = asyncio.Event()
        self.probes_done = asyncio.Event()
        if readers == 0:
            self.done.set()
        if probes == 0:
            self.probes_done.set()

    def delta(self, now: float, frame: bytes, probe: bool) -> None:
        """Count one delta frame received at ``now`` and its stamped tokens."""
        self.frames += 1
        self.bytes += len(frame)
        if now < self.first:
            self.first = now
        self.last = now
        if not self.stamped:
            self.tokens += 1  # unstamped answers (buffer fillers) count frames
        elif probe:
            stamps = _STAMP.findall(frame)
            self.tokens += len(stamps)
            self.latencies.extend([now - float(s) for s in stamps])
        else:
            # Stamps hold the only dots of a delta frame (stamp models only).
            self.tokens += frame.count(b".")

    def end(self, probe: bool) -> None:
        """One more viewer saw ``turn.end``."""
        self.ended += 1
        if probe:
            self.probes_ended += 1
            if self.probes_ended >= self.probes:
                self.probes_done.set()
        if self.ended >= self.readers:
            self.done.set()


class Crowd:
    """The viewers of one run; they report to whatever tally is current."""

    def __init__(self) -> None:
        self.tally = Tally(0, 0)
        self.lost = 0


class WireClient(asyncio.Protocol):
    """A WebSocket viewer written against RFC 6455 directly, as an asyncio protocol.

    It parses frames in ``data_received`` and never wakes a task per message, so one core
    can read several hundred thousand frames a second. With ``sio`` it speaks socket.io:
    engine.io's ``0`` open packet, ``40`` namespace connect, ``2``/``3`` ping and pong.
    """

    def __init__(self, crowd: Crowd, sio: bool = False, probe: bool = True) -> None:
        self.crowd = crowd
        self.sio = sio
        self.probe = probe
        self.lowat = next(_lowats)
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] | None = None
        self._head = b""
        self._buf = b""
        self._upgraded = False
        self._subscribed = False
        self._delta = b'42["delta"' if sio else b'{"type":"delta"'
        self._end = b'42["turn.end"' if sio else b'{"type":"turn.end"'
        self._closing = False

    async def connect(self, host: str, port: int, path: str) -> None:
        """Connect, upgrade, and wait until subscribed (welcome, or socket.io's connect ack)."""
        loop = asyncio.get_running_loop()
        self.ready = loop.create_future()
        transport, _ = await loop.create_connection(lambda: self, host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(_upgrade(host, port, path, key))
        await self.ready

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        """Count a connection the server dropped."""
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before subscribing: {exc}"))
        if not self._closing:
            self.crowd.lost += 1

    def data_received(self, data: bytes) -> None:
        """Parse every complete frame in the buffer."""
        now = time.time()
        if not self._upgraded:
            self._head += data
            response, sep, data = self._head.partition(b"\r\n\r\n")
            if not sep:
                return
            if not response.startswith(b"HTTP/1.1 101"):
                if self.ready is not None and not self.ready.done():
                    status = response.split(b"\r\n")[0].decode(errors="replace")
                    self.ready.set_exception(ConnectionError(status))
                return
            self._upgraded = True
        if self._buf:
            data = self._buf + data
            self._buf = b""
        pos, end = 0, len(data)
        while end - pos >= 2:
            size = data[pos + 1] & 0x7F
            head = 2
            if size == 126:
                if end - pos < 4:
                    break
                size, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
            elif size == 127:
                if end - pos < 10:
                    break
                size, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
            if end - pos < head + size:
                break
            opcode = data[pos] & 0x0F
            payload = data[pos + head : pos + head + size]
            pos += head + size
            if opcode == 1:
                self._text(now, payload)
            elif opcode == 9:
                self._send(0xA, payload)
            elif opcode == 8:
                if not self._closing:
                    self.crowd.lost += 1
                self._closing = True
                assert self.transport is not None
                self.transport.close()
                return
        if pos < end:
            self._buf = data[pos:]

    def _text(self, now: float, payload: bytes) -> None:
        if payload.startswith(self._delta):
            self.crowd.tally.delta(now, payload, self.probe)
        elif payload.startswith(self._end):
            self.crowd.tally.end(self.probe)
        elif self._subscribed:
            if self.sio and payload == b"2":
                self._send(1, b"3")
        elif self.sio and payload.startswith(b"0"):
            self._send(1, b"40")
        elif not self.sio or payload.startswith(b"40"):
            self._subscribed = True
            if self.ready is not None and not self.ready.done():
                self.ready.set_result(None)

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(masked_frame(opcode, payload))

    async def prompt(self, content: str, model: str, ref: str) -> None:
        """Send a prompt.

        Fanout's ``prompt`` frame (the WebSocket peers read the same), or a socket.io ``prompt``
        event.
        """
        if self.sio:
            self._send(1, b"42" + _dumps(["prompt", {"content": content, "model": model}]).encode())
        else:
            frame = {"type": "prompt", "content": content, "model": model, "id": ref}
            self._send(1, _dumps(frame).encode())

    def batch(self, on: bool) -> None:
        """Read in batches during a turn and frame by frame between turns.

        A sink reads in batches during a turn, and frame by frame between turns (so that it answers
        the server's pings in time).
        """
        if self.transport is not None and not self.probe:
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, self.lowat if on else 1)

    async def close(self) -> None:
        """Send a close frame and drop the connection."""
        self._closing = True
        if self.transport is not None and not self.transport.is_closing():
            self._send(8, (1000).to_bytes(2, "big"))
            self.transport.close()


class SseClient:
    """One streaming GET of the per-client SSE proxy: it is both the prompt and the viewer."""

    def __init__(self, crowd: Crowd) -> None:
        self.crowd = crowd

    async def run(self, session: aiohttp.ClientSession, url: str) -> None:
        """Read the event stream to its end, counting deltas."""
        crowd = self.crowd
        async with session.get(url) as resp:
            resp.raise_for_status()
            rest = b""
            async for data in resp.content.iter_any():
                now = time.time()
                *events, rest = (rest + data).split(b"\n\n")
                for event in events:
                    if event.startswith(b'data: {"type":"delta"'):
                        crowd.tally.delta(now, event, True)
                    elif event.startswith(b'data: {"type":"turn.end"'):
                        crowd.tally.end(True)


class StalledClient:
    """Completes the WebSocket (and socket.io) handshake, then never reads again.

    On loopback (64 KiB segments) the server's kernel would buffer megabytes for a reader
    that never reads, hiding the stall from the server process. A 1460-byte MSS (an Ethernet
    path) and a small receive buffer keep the kernel's share near what it is on a real
    network (tens of kB), so the stall reaches the server within seconds.
    """

    RCVBUF = 4096
    MSS = 1460

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self._seen = b""

    async def connect(self, host: str, port: int, path: str, sio: bool) -> None:
        """Open the socket, upgrade it, and (socket.io) join the default namespace."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RCVBUF)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, self.MSS)
        sock.setblocking(False)
        self.sock = sock
        await loop.sock_connect(sock, (host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(sock, _upgrade(host, port, path, key))
        # Read just far enough to know the server has registered this client.
        async with asyncio.timeout(10):
            await self._expect(b"\r\n\r\n")
            self._seen = self._seen.partition(b"\r\n\r\n")[2]
            if sio:
                await self._expect(b"0{")
                await loop.sock_sendall(sock, masked_frame(1, b"40"))
                self._seen = b""
                await self._expect(b"40")
            else:
                await self._expect(b'"welcome"')

    async def _expect(self, marker: bytes) -> None:
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        while marker not in self._seen:
            data = await loop.sock_recv(self.sock, 4096)
            if not data:
                raise ConnectionError("closed during the handshake")
            self._seen += data

    def close(self) -> None:
        """Drop the connection."""
        if self.sock is not None:
            self.sock.close()


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final client-to-server frame; clients must mask (RFC 6455 section 5.3)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + size.to_bytes(8, "big")
    repeated = (mask * (size // 4 + 1))[:size]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(size, "big")
    return head + mask + body


def _upgrade(host: str, port: int, path: str, key: str) -> bytes:
    """The HTTP/1.1 upgrade request of a WebSocket handshake."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
