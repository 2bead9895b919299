"""When to tell a room its viewer count: on change, at most once per interval."""

from __future__ import annotations

from .messages import Presence


class PresenceGate:
    """Decides when a ``presence`` event goes out (PROTOCOL.md: at most once a second)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._sent_at: float | None = None
        self._sent_count: int | None = None
        self._scheduled = False
        self._joined = False

    def changed(self, now: float, *, joined: bool = False) -> float | None:
        """The count changed: the delay before ``flush``, or None when one is already due.

        A join makes the next flush send even an unchanged count: the newcomer learned the
        count from its welcome, which may differ from the last presence the others saw.
        """
        self._joined = self._joined or joined
        if self._scheduled:
            return None
        self._scheduled = True
        if self._sent_at is None:
            return 0.0
        return max(0.0, self._sent_at + self.interval - now)

    def flush(self, now: float, viewers: int) -> Presence | None:
        """The scheduled moment came: a Presence unless the count is back where it was."""
        self._scheduled = False
        if viewers == self._sent_count and not self._joined:
            return None
        self._joined = False
        self._sent_at = now
        self._sent_count = viewers
        return Presence(viewers=viewers)
