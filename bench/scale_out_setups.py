"""What the scale-out benchmark runs: its sizes (``Plan``) and its deployments (``Setup``)."""

from __future__ import annotations

import dataclasses

from .procs import SERVER_CPU


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """Sizes of the run; ``FULL`` is ``make bench``, ``QUICK`` a smoke run."""

    rounds: int
    sizes: tuple[int, ...]
    burst_tokens: int
    paced_rate: float
    paced_tokens: int
    redis_cpu: int


FULL = Plan(3, (300, 1500, 3000), 2000, 80.0, 200, SERVER_CPU)
QUICK = Plan(1, (60,), 200, 80.0, 40, SERVER_CPU)


@dataclasses.dataclass(frozen=True, slots=True)
class Setup:
    """How many instances run, how many of them have viewers, and the broker."""

    key: str
    label: str
    instances: int
    watched: int
    redis: bool


SETUPS = (
    Setup("3of3", "3 instances, viewers on 3", 3, 3, True),
    Setup("2of3", "3 instances, viewers on 2", 3, 2, True),
    Setup("1mem", "1 instance, memory://", 1, 1, False),
)
BY_KEY = {s.key: s for s in SETUPS}
