"""Check that the running environment holds exactly the versions pinned in uv.lock.

Run as ``python -m tests.lock_matches [--extra NAME ...]`` (``make test`` does). It reads the
lock itself, independently of the tool that installed it: every installed distribution but the
project must be in the lock at the lock's version, and every requirement of the project (with
the given extras) must be installed.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "fanout"


def locked_versions(lock_path: Path) -> dict[str, str]:
    """Map each package of the lock (canonical name) to its pinned version."""
    lock = tomllib.loads(lock_path.read_text(encoding="utf-8"))
    return {
        canonicalize_name(package["name"]): package["version"]
        for package in lock["package"]
        if "version" in package and canonicalize_name(package["name"]) != PROJECT
    }


def installed_versions() -> dict[str, str]:
    """Map each distribution installed in this interpreter (canonical name) to its version."""
    return {
        canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()
    }


def mismatches(locked: dict[str, str], installed: dict[str, str], extras: list[str]) -> list[str]:
    """What differs between the environment and the lock, one line per problem."""
    problems: list[str] = []
    for name, version in sorted(installed.items()):
        if name == PROJECT:
            continue
        if name not in locked:
            problems.append(f"{name}=={version} is installed but not in uv.lock")
        elif locked[name] != version:
            problems.append(f"{name}=={version} is installed; uv.lock pins {locked[name]}")
    for text in metadata.requires(PROJECT) or []:
        requirement = Requirement(text)
        wanted = any(
            requirement.marker is None or requirement.marker.evaluate({"extra": extra})
            for extra in [*extras, ""]
        )
        if wanted and canonicalize_name(requirement.name) not in installed:
            problems.append(f"{requirement.name} is required but not installed")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Print every mismatch and return 1 when there is one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", action="append", default=[], help="an extra that is synced")
    args = parser.parse_args(argv)
    problems = mismatches(locked_versions(ROOT / "uv.lock"), installed_versions(), args.extra)
    for problem in problems:
        print(f"lock mismatch: {problem}", file=sys.stderr)
    if problems:
        return 1
    count = len(installed_versions()) - 1
    print(f"lock check: {count} installed packages match uv.lock exactly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
