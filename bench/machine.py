"""What the benchmarks ran on: CPU, cores, pinning, versions and how busy the machine was."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .procs import ROOT, pinning

_PACKAGES = ("aiohttp", "websockets", "python-socketio", "python-engineio", "openai")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _revision() -> str:
    """The source tree's commit (read-only git), and whether it has local changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head or 'unknown'}{' with local changes' if dirty else ''}"


def describe() -> dict[str, object]:
    """The machine and software, and the load average before the run."""
    return {
        "revision": _revision(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": round(_memory_gib(), 1),
        "kernel": platform.release().split("-")[0],
        "python": sys.version.split()[0],
        "pinned": pinning(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }


def after() -> dict[str, object]:
    """The load average after the run."""
    return {"load_after": [round(x, 2) for x in os.getloadavg()]}
