"""Processes of a benchmark: spawn them pinned to a CPU, read their RSS and CPU time."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = 0
CLIENT_CPU = 1
_TICKS = os.sysconf("SC_CLK_TCK")


def pinning() -> bool:
    """True when processes can be pinned (taskset present and at least two CPUs)."""
    # Not sched_getaffinity(0): the load generator pins itself before it spawns servers.
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pin_self(cpu: int) -> None:
    """Pin this process (the load generator) to ``cpu`` when pinning is possible."""
    if pinning():
        os.sched_setaffinity(0, {cpu})


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """The resident set size of ``pid`` (``VmRSS`` of /proc/PID/status), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far (/proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces; the fields after its closing parenthesis do not.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def core_busy_seconds() -> dict[int, float]:
    """Per CPU: seconds spent not idle so far (user, system, irq, softirq... of /proc/stat)."""
    busy: dict[int, float] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(v) for v in values]
        idle = ticks[3] + ticks[4]  # idle + iowait
        # guest time is already counted in user; steal is time this machine did not get.
        busy[int(name[3:])] = (sum(ticks[:8]) - idle - ticks[7]) / _TICKS
    return busy


def kernel_thread(name: str) -> int | None:
    """The pid of a kernel thread (``ksoftirqd/0``...), or None."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    return int(entry.name)
            except OSError:
                continue
    return None


class Proc:
    """A Python module run as a child process pinned to one CPU; stopped on exit."""

    def __init__(
        self,
        module: str,
        args: list[str],
        cpu: int,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ):
        self.argv = [sys.executable, "-m", module, *args]
        pin = ["taskset", "-c", str(cpu)] if pinning() else []
        child_env = {**os.environ, **(env or {})}
        child_env.pop("OPENAI_API_KEY", None)
        # A file, not a pipe: a chatty child (the mock's access log) must never block on it.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        # taskset execs the interpreter, so the child's pid is the server's own.
        self.popen = subprocess.Popen(
            [*pin, *self.argv],
            cwd=cwd or ROOT,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.popen.pid

    async def wait_port(self, port: int, timeout: float = 30.0) -> None:
        """Wait until the child accepts TCP connections on ``port``."""
        async with asyncio.timeout(timeout):
            while True:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"{' '.join(self.argv)} exited: {self.log_tail()}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                return

    def log_tail(self, chars: int = 2000) -> str:
        """The end of what the child wrote to stderr."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-chars:]

    def stop(self) -> None:
        """Terminate the child and wait for it (kill after five seconds)."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()

    def __enter__(self) -> Proc:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
