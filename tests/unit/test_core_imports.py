"""server/core is sans-I/O: no asyncio, aiohttp, redis, openai, nor the rest of server."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "server" / "core"
FORBIDDEN = ("asyncio", "aiohttp", "redis", "openai")


def bad_imports(source: str) -> list[str]:
    """Every module a source imports that server/core must not depend on."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:
                found.append("." * node.level + (node.module or ""))
                continue
            if node.level == 1:
                continue
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            outside_core = top == "server" and not (
                name == "server.core" or name.startswith("server.core.")
            )
            if top in FORBIDDEN or outside_core:
                found.append(name)
    return found


CORE_FILES = sorted(CORE.glob("*.py"))


def test_core_files_are_found() -> None:
    """The scan sees the core modules (an empty glob would make the check vacuous)."""
    names = {p.name for p in CORE_FILES}
    assert {"__init__.py", "room.py", "codec.py", "sse.py", "accumulator.py"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=[p.name for p in CORE_FILES])
def test_core_module_imports_nothing_with_io(path: Path) -> None:
    """No core module imports asyncio, aiohttp, redis, openai or server outside server.core."""
    assert bad_imports(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import asyncio", ["asyncio"]),
        ("import os, aiohttp.web", ["aiohttp.web"]),
        ("from redis.asyncio import Redis", ["redis.asyncio"]),
        ("def f():\n    import openai", ["openai"]),
        ("from server.broker import memory", ["server.broker"]),
        ("import server.app", ["server.app"]),
        ("from .. import app", [".."]),
        ("from ..broker import x", ["..broker"]),
        ("from server.core import room\nfrom .codec import encode\nimport json", []),
        ("import server.core.room\nimport asyncio_extras_not_real", []),
        ("from server.corex import y", ["server.corex"]),
    ],
)
def test_the_checker_itself(source: str, expected: list[str]) -> None:
    """The checker flags forbidden imports (also nested or relative ones) and allows the rest."""
    assert bad_imports(source) == expected
