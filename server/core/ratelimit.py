"""Token buckets per principal (PROTOCOL.md: prompt and room-creation budgets)."""

from __future__ import annotations

from collections import OrderedDict


class TokenBucket:
    """``rate`` tokens a minute, at most ``burst`` saved up."""

    __slots__ = ("_at", "_tokens", "burst", "per_second")

    def __init__(self, per_minute: float, burst: int, now: float) -> None:
        self.per_second = per_minute / 60.0
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._at = now

    def take(self, now: float) -> float | None:
        """Spend one token: None when allowed, else the seconds until one is free."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / self.per_second

    def give_back(self) -> None:
        """Return one token spent on something that turned out not to count."""
        self._tokens = min(float(self.burst), self._tokens + 1.0)


class RateLimiter:
    """One bucket per key (a principal), the least recently used forgotten past a cap."""

    def __init__(self, per_minute: float, burst: int, max_keys: int = 100_000) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, now: float) -> float | None:
        """None when ``key`` may go on, else the seconds to wait; rate 0 means unlimited."""
        if self.per_minute <= 0:
            return None
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.per_minute, self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)

    def give_back(self, key: str) -> None:
        """Return the token ``key`` spent last (a replay that started nothing)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.give_back()
