"""What the scale-out benchmark observes: every viewer's frames, and Redis's own counters.

- ``RecordingViewer``: a ``WireClient`` that also keeps the frames of the measured turn, so
  that afterwards each viewer's text can be rebuilt and its seqs checked for gaps.
- ``check_turn``: rebuilds every viewer's text from its frames (merged deltas included).
- ``deliveries``: rate and latency from the tallies, the producer's instance apart.
- ``RedisServer``: Debian's redis-server on a free loopback port, nothing saved to disk.
- ``RedisCounters`` and ``redis_figures``: what Redis did during one turn (``INFO``,
  ``PUBSUB NUMSUB``), and how many copies of the turn's messages it wrote, counted from its
  output bytes and the bytes of one copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import shutil
import subprocess
import tempfile
from array import array
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from .clients import Crowd, Tally, WireClient
from .harness import percentiles
from .procs import free_port, pinning

READ_SECONDS = 10.0
_KEPT = (b'{"type":"turn.start"', b'{"type":"delta"', b'{"type":"turn.end"')


class RecordingViewer(WireClient):
    """A WebSocket viewer (probe or sink, see ``Tally``) that keeps the measured turn's frames.

    They are parsed only after the turn, so keeping them costs a list append.
    """

    def __init__(self, crowd: Crowd, probe: bool) -> None:
        super().__init__(crowd, sio=False, probe=probe)
        self.recording = False
        self.frames: list[bytes] = []

    def _text(self, now: float, payload: bytes) -> None:
        if self.recording and payload.startswith(_KEPT):
            self.frames.append(payload)
        super()._text(now, payload)


@dataclass(frozen=True, slots=True)
class TurnCheck:
    """What the viewers' frames say about one turn."""

    viewers: int
    whole: int  # saw turn.start, every seq up to turn.end once and in order, and turn.end
    gaps: int  # viewers with a missing, repeated or out-of-order seq
    texts: int  # distinct texts rebuilt (1 when every viewer agrees)
    tokens: int  # stamps in the most common text
    events: int  # seqs of the turn, turn.start and turn.end included
    statuses: tuple[str, ...]  # the turn.end statuses seen


def check_turn(frames: list[list[bytes]]) -> TurnCheck:
    """Rebuild each viewer's text (choice 0's content) and check its seqs are contiguous."""
    parsed: dict[bytes, dict[str, Any]] = {}  # viewers mostly got identical frames
    texts: Counter[bytes] = Counter()  # by digest: identical texts are not kept twice
    sample: dict[bytes, str] = {}
    whole = events = 0
    statuses: set[str] = set()
    for own in frames:
        start: int | None = None
        after = -1
        parts: list[str] = []
        ok = ended = False
        for raw in own:
            msg = parsed.get(raw)
            if msg is None:
                msg = parsed[raw] = json.loads(raw)
            kind, seq = msg["type"], int(msg["seq"])
            if kind == "turn.start":
                ok = start is None
                start = after = seq
                continue
            if start is None or ended or int(msg.get("first_seq", seq)) != after + 1:
                ok = False
            after = seq
            if kind == "turn.end":
                ended = True
                statuses.add(str(msg["status"]))
                events = max(events, seq - (start or seq) + 1)
                continue
            for choice in msg["choices"]:
                if choice.get("index") == 0 and choice.get("content"):
                    parts.append(choice["content"])
        whole += ok and ended
        text = "".join(parts)
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        texts[digest] += 1
        sample.setdefault(digest, text)
    common = sample[texts.most_common(1)[0][0]] if texts else ""
    return TurnCheck(
        viewers=len(frames),
        whole=whole,
        gaps=len(frames) - whole,
        texts=len(texts),
        tokens=common.count("."),  # a stamp model's text has one dot per token
        events=events,
        statuses=tuple(sorted(statuses)),
    )


def deliveries(tallies: list[Tally], tokens: int) -> dict[str, Any]:
    """Rate and latency over every viewer, and per instance kind.

    Rate and latency over every viewer, and latency apart for the producer's instance (the first
    tally) and the others (whose events crossed Redis).
    """
    got = sum(t.tokens for t in tallies)
    seconds = max(max(t.last for t in tallies) - min(t.first for t in tallies), 0.0)
    seconds = seconds if got else 0.0

    def quantiles(group: list[Tally]) -> list[float]:
        samples = array("d", (x for t in group for x in t.latencies))
        probes = sum(t.probes for t in group)
        return percentiles(samples, tokens * probes, 0.5, 0.99) if probes else [math.nan] * 2

    (p50, p99), local, remote = quantiles(tallies), quantiles(tallies[:1]), quantiles(tallies[1:])
    return {
        "tokens": tokens,
        "delivered": got,
        "expected": tokens * sum(t.readers for t in tallies),
        "receipt_seconds": seconds,
        "rate": got / seconds if seconds > 0 else 0.0,
        "frames": sum(t.frames for t in tallies),
        "p50": p50,
        "p99": p99,
        "p50_producer": local[0],
        "p99_producer": local[1],
        "p50_others": remote[0],
        "p99_others": remote[1],
    }


class RedisServer:
    """redis-server on a free 127.0.0.1 port, pinned to ``cpu``, persisting nothing."""

    def __init__(self, cpu: int) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory()
        pin = ["taskset", "-c", str(cpu)] if pinning() else []
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        args += ["no", "--dir", self._dir.name, "--logfile", "", "--loglevel", "warning"]
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        self.popen = subprocess.Popen(
            [*pin, binary, *args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.client = aioredis.Redis.from_url(self.url, socket_timeout=10)

    @property
    def pid(self) -> int:
        """redis-server's process id (taskset execs it)."""
        return self.popen.pid

    async def ready(self, timeout: float = 10.0) -> None:
        """Wait until Redis answers PING."""
        async with asyncio.timeout(timeout):
            while True:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self.log_tail()}")
                try:
                    await self.client.ping()
                    return
                except (aioredis.ConnectionError, OSError):
                    await asyncio.sleep(0.05)

    def log_tail(self, chars: int = 2000) -> str:
        """The end of what redis-server logged."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-chars:]

    async def stop(self) -> None:
        """Close the client, then stop the server (SIGTERM; it saves nothing)."""
        await self.client.aclose()
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        self._dir.cleanup()


@dataclass(frozen=True, slots=True)
class RedisCounters:
    """Redis's cumulative counters at one moment, and one room's channel and seq."""

    commands: dict[str, int]  # calls per command (INFO commandstats), scripts' own included
    output_bytes: int  # total_net_output_bytes (INFO stats), before this read's replies
    reply_bytes: int  # what this read's replies added to it afterwards
    subscribers: int  # PUBSUB NUMSUB of the room's channel
    seq: int  # the room's seq (its meta hash)

    @staticmethod
    async def read(port: int, prefix: str, room: str) -> RedisCounters:
        """Read them on a connection of their own that speaks RESP directly.

        So that the bytes of its replies are known exactly (INFO stats goes first: the later
        replies, and its own, are all counted after the value it reports).
        """
        channel = f"{prefix}:{{{room}}}"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            async with asyncio.timeout(READ_SECONDS):
                return await RedisCounters._read(reader, writer, channel)
        finally:
            writer.close()
            await writer.wait_closed()

    @staticmethod
    async def _read(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, channel: str
    ) -> RedisCounters:
        stats, used = await _command(reader, writer, "INFO", "stats")
        commands, more = await _command(reader, writer, "INFO", "commandstats")
        numsub, more2 = await _command(reader, writer, "PUBSUB", "NUMSUB", channel)
        seq, more3 = await _command(reader, writer, "HGET", f"{channel}:meta", "seq")
        calls = {}
        for line in commands.decode().splitlines():
            if line.startswith("cmdstat_"):
                name, _, fields = line.removeprefix("cmdstat_").partition(":")
                calls[name] = int(fields.split(",")[0].removeprefix("calls="))
        output = _info_field(stats, "total_net_output_bytes")
        return RedisCounters(
            calls, output, used + more + more2 + more3, int(numsub[1]), int(seq or 0)
        )

    def calls(self, before: RedisCounters, command: str) -> int:
        """How many times ``command`` ran since ``before``."""
        return self.commands.get(command, 0) - before.commands.get(command, 0)

    def output_since(self, before: RedisCounters) -> int:
        """Bytes Redis wrote to its clients since ``before``, less ``before``'s replies."""
        return self.output_bytes - before.output_bytes - before.reply_bytes


def _info_field(info: bytes, name: str) -> int:
    for line in info.decode().splitlines():
        if line.startswith(name + ":"):
            return int(line.split(":", 1)[1])
    raise RuntimeError(f"INFO has no {name}")


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *args: str
) -> tuple[Any, int]:
    """Send one command; its reply and the reply's size in bytes."""
    encoded = [a.encode() for a in args]
    bulks = b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in encoded)
    writer.write(b"*%d\r\n" % len(encoded) + bulks)
    await writer.drain()
    return await _reply(reader)


async def _reply(reader: asyncio.StreamReader) -> tuple[Any, int]:
    """One RESP2 reply and its size in bytes."""
    line = await reader.readuntil(b"\r\n")
    kind, rest, size = line[:1], line[1:-2], len(line)
    if kind == b"$":
        if int(rest) < 0:
            return None, size
        data = await reader.readexactly(int(rest) + 2)
        return data[:-2], size + len(data)
    if kind == b"*":
        items = []
        for _ in range(int(rest)):
            item, used = await _reply(reader)
            items.append(item)
            size += used
        return items, size
    if kind == b":":
        return int(rest), size
    if kind == b"-":
        raise RuntimeError(f"redis: {rest.decode(errors='replace')}")
    return rest, size


async def copy_bytes(client: aioredis.Redis, prefix: str, room: str, first: int, last: int) -> int:
    """Bytes Redis writes to ONE subscriber for the events ``first..last`` of a room.

    Each was published (redis_scripts.APPEND) as ``E {epoch} {kind} {seq} {data}`` on the
    room's channel; a RESP2 subscriber receives ``*3 $7 message $len channel $len payload``.
    """
    channel = f"{prefix}:{{{room}}}".encode()
    epoch = cast(bytes, await client.hget(f"{prefix}:{{{room}}}:meta", "epoch") or b"")
    events = f"{prefix}:{{{room}}}:events"
    entries = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        await client.xrange(events, f"{first}-0", f"{last}-0"),
    )
    total = 0
    for entry_id, fields in entries:
        seq = entry_id.split(b"-")[0]
        payload = b"E " + epoch + b" " + fields[b"k"] + b" " + seq + b" " + fields[b"d"]
        total += len(b"*3\r\n$7\r\nmessage\r\n")
        total += len(b"$%d\r\n%s\r\n" % (len(channel), channel))
        total += len(b"$%d\r\n" % len(payload)) + len(payload) + 2
    return total


async def redis_figures(
    client: aioredis.Redis, prefix: str, room: str, before: RedisCounters, after: RedisCounters
) -> dict[str, Any]:
    """What Redis did between two reads: events stored and published, copies sent."""
    events = after.seq - before.seq
    one_copy = await copy_bytes(client, prefix, room, before.seq + 1, after.seq)
    sent = after.output_since(before)
    return {
        "events": events,
        "xadd": after.calls(before, "xadd"),
        "publish": after.calls(before, "publish"),
        "catch_up_reads": after.calls(before, "xrange"),
        "numsub_before": before.subscribers,
        "numsub_after": after.subscribers,
        "messages": events * after.subscribers,
        "messages_per_event": after.subscribers if events else 0,
        "copy_bytes": one_copy,
        "output_bytes": sent,
        "copies_from_bytes": sent / one_copy if one_copy else 0.0,
    }
