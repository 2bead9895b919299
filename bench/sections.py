"""Sections of docs/benchmarks.md that a benchmark of its own keeps between two markers."""

from __future__ import annotations


def splice(document: str, block: str, begin: str, end: str) -> str:
    """Replace (or append) the section of ``document`` between ``begin`` and ``end``.

    ``document`` with the section between ``begin`` and ``end`` replaced by ``block`` (which carries
    the markers), or ``block`` appended when there is none.
    """
    start = document.find(begin)
    stop = document.find(end, max(start, 0))
    if start < 0 and stop < 0:
        return f"{document.rstrip()}\n\n{block}" if document.strip() else block
    if start < 0 or stop < 0:
        raise ValueError(f"one marker without the other: {begin} ... {end}")
    return document[:start] + block + document[stop + len(end) :].removeprefix("\n")
