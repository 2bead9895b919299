"""Fan-out benchmark: deliveries per second from one upstream stream to N WebSocket viewers.

The fanout server runs pinned to CPU 0, the mock upstream (as fast as it can write) and this
load generator on CPU 1, all on loopback. Each round sends prompts one after another and
measures, per prompt, the sequenced frames every subscriber received divided by the time from
the first ``turn.start`` to the last ``turn.end``. Results are medians with min and max, and
the load generator's own CPU use (a round where it is saturated is marked).

    python -m bench.run [--subscribers 100,500] [--prompts 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
SEQUENCED = (b'"type":"turn.start"', b'"type":"delta"', b'"type":"turn.end"')
MAX_SECONDS = 120.0  # every round stops by itself


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(args: list[str], cpu: int) -> subprocess.Popen[bytes]:
    pin = ["taskset", "-c", str(cpu)] if _has_taskset() else []
    env = {**os.environ, "FANOUT_SERVER_LOG_LEVEL": "warning"}
    env.pop("OPENAI_API_KEY", None)
    return subprocess.Popen(
        [*pin, sys.executable, "-m", "server", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _has_taskset() -> bool:
    return subprocess.run(["which", "taskset"], capture_output=True).returncode == 0


async def _wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as s, asyncio.timeout(30):
        while True:
            try:
                async with s.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)


@dataclass
class Round:
    """One round's result."""

    subscribers: int
    rates: list[float]
    cpu: float


class Sub:
    """A subscriber that counts sequenced frames and notices turn ends."""

    def __init__(self) -> None:
        self.count = 0
        self.ends = 0
        self.first_start = 0.0
        self.last_end = 0.0

    async def run(
        self, ws: aiohttp.ClientWebSocketResponse, on_end: asyncio.Event, clock: dict[str, float]
    ) -> None:
        async for msg in ws:
            data = msg.data if isinstance(msg.data, str) else ""
            raw = data.encode()
            if any(tag in raw for tag in SEQUENCED):
                self.count += 1
                if SEQUENCED[0] in raw and not clock.get("start"):
                    clock["start"] = time.perf_counter()
                if SEQUENCED[2] in raw:
                    self.ends += 1
                    clock["end"] = time.perf_counter()
                    on_end.set()


async def _round(url: str, room: str, subscribers: int, prompts: int) -> Round:
    ws_url = url.replace("http", "ws") + f"/api/rooms/{room}/ws"
    rates: list[float] = []
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session, asyncio.timeout(MAX_SECONDS):
        sockets = [await session.ws_connect(ws_url, max_msg_size=0) for _ in range(subscribers)]
        subs = [Sub() for _ in sockets]
        clock: dict[str, float] = {}
        on_end = asyncio.Event()
        readers = [
            asyncio.create_task(s.run(ws, on_end, clock))
            for s, ws in zip(subs, sockets, strict=True)
        ]
        await asyncio.sleep(0.5)  # welcome + snapshot
        for n in range(1, prompts + 1):
            before = sum(s.count for s in subs)
            clock.clear()
            async with session.post(
                f"{url}/api/rooms/{room}/prompts", json={"content": f"benchmark prompt {n}"}
            ) as r:
                assert r.status == 202, await r.text()
            while min(s.ends for s in subs) < n:
                on_end.clear()
                await on_end.wait()
            delivered = sum(s.count for s in subs) - before
            rates.append(delivered / max(clock["end"] - clock["start"], 1e-9))
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime
    return Round(subscribers, rates, cpu / (time.perf_counter() - wall0))


def _report(rounds: list[Round], args: argparse.Namespace) -> str:
    lines = [
        "| subscribers | deliveries/s median | min | max | load-generator CPU |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n in args.subscribers:
        rates = [r for rnd in rounds if rnd.subscribers == n for r in rnd.rates]
        cpu = max(rnd.cpu for rnd in rounds if rnd.subscribers == n)
        mark = " (saturated)" if cpu > 0.9 else ""
        lines.append(
            f"| {n} | {statistics.median(rates):,.0f} | {min(rates):,.0f} | "
            f"{max(rates):,.0f} | {cpu:.0%}{mark} |"
        )
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> None:
    if _has_taskset():
        os.sched_setaffinity(0, {1})
    up_port, port = _free_port(), _free_port()
    mock = _spawn(
        ["mock-upstream", "--port", str(up_port), "--tokens-per-second", "0", "--ttft", "0"], cpu=1
    )
    server = _spawn(
        [
            "serve",
            "--port",
            str(port),
            "--upstream-url",
            f"http://127.0.0.1:{up_port}/v1",
            "--model",
            "mock",
        ],
        cpu=0,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(f"http://127.0.0.1:{up_port}/v1/models")
        await _wait_ready(url + "/healthz")
        rounds: list[Round] = []
        for r in range(args.rounds):
            for n in args.subscribers:
                rounds.append(await _round(url, f"bench-{n}-{r}", n, args.prompts))
                print(
                    f"round {r + 1}: {n} subscribers: median "
                    f"{statistics.median(rounds[-1].rates):,.0f} deliveries/s",
                    flush=True,
                )
        table = _report(rounds, args)
        print(table)
        if args.out:
            _write(Path(args.out), table, args)
    finally:
        for proc in (server, mock):
            proc.terminate()
            proc.wait(timeout=10)


def _write(path: Path, table: str, args: argparse.Namespace) -> None:
    command = (
        f"python -m bench.run --subscribers {','.join(map(str, args.subscribers))} "
        f"--prompts {args.prompts} --rounds {args.rounds}"
    )
    path.write_text(
        "# Benchmarks\n\n"
        "Fan-out of one upstream stream to N WebSocket subscribers of one room, on this "
        "project's 2-core machine: the server pinned to CPU 0; the mock upstream (writing as "
        "fast as it can) and the load generator on CPU 1; loopback only. A rate is the "
        "sequenced frames received by all subscribers for one prompt, divided by the time "
        "from the first `turn.start` to the last `turn.end` (about 55 frames per prompt per "
        "subscriber). Medians over every prompt of every round, with min and max.\n\n"
        f"Command (`make bench` runs it): `{command}`\n\n{table}\n\n"
        "Peers (websockets.broadcast, python-socketio, the raw floor, the per-client SSE "
        "proxy), paced and stalled-reader scenarios and memory per subscriber are not "
        "measured yet.\n"
    )


def main() -> None:
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--subscribers", default="100,500", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
