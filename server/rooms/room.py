"""One room on this instance: its replicated state and everything that does I/O for it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from server.core.codec import encode
from server.core.codes import CloseCode
from server.core.errors import BrokerError
from server.core.messages import SequencedEvent, ServerMessage, TurnEnd
from server.core.presence import PresenceGate
from server.core.replica_rules import ReplicaRules, Standing
from server.core.room import RoomState
from server.rooms.rounds import FanoutRounds
from server.rooms.subscriber import Subscriber

if TYPE_CHECKING:
    from server.rooms.metrics import Metrics


log = logging.getLogger(__name__)


class TurnLost(BrokerError):
    """This instance may no longer publish the turn (its lease was lost or refused)."""


class Room:
    """One room on this instance: the replicated state plus everything that does I/O for it."""

    def __init__(self, state: RoomState, metrics: Metrics | None = None) -> None:
        self.state = state
        self.metrics = metrics
        self.subscribers: set[Subscriber] = set()
        self.task: asyncio.Task[None] | None = None
        self.presence = PresenceGate()
        self.presence_timer: asyncio.TimerHandle | None = None
        self.rounds = FanoutRounds(state.name, self.subscribers)  # a slice of subscribers at a time
        self.idle_since = time.monotonic()
        # Replication: this instance's standing for the room and the lease's fence while it
        # produces a turn (``core.replica_rules``), the last seq local subscribers got, the
        # other instances' viewers, when the broker was first found without the room.
        self.rules = ReplicaRules()
        self.wiped_since: float | None = None
        self.lease_task: asyncio.Task[None] | None = None
        self.delivered = state.seq
        self.remote_viewers = 0
        self.listening = False
        self.opening: asyncio.Event | None = None  # set when the first open is done
        self.lock = asyncio.Lock()  # loading and catching up, one at a time
        self.commit_lock = asyncio.Lock()  # this instance's writes, in the order made
        self.sync_task: asyncio.Task[None] | None = None
        self.sync_again = False
        self.last_event_at = time.monotonic()
        self.viewers_task: asyncio.Task[None] | None = None
        self.viewers_dirty = False
        # Writes made here but not stored yet: joiners wait for them (``Hub.open``), so no
        # snapshot shows what the broker may still refuse. ``busy``: prompts and cancels
        # under way, which keep the room listened to.
        self.pending = 0
        self.settled = asyncio.Event()
        self.settled.set()
        self.busy = 0

    @property
    def fence(self) -> int:
        """The turn lease's fence while this instance holds it, else 0."""
        return self.rules.fence

    @property
    def loaded(self) -> bool:
        """Whether the replica has been read from the broker once."""
        return self.rules.standing is not Standing.UNLOADED

    @property
    def reloading(self) -> bool:
        """Whether the replica must be rebuilt from the broker before it is read."""
        return self.rules.standing in (Standing.UNLOADED, Standing.RELOADING)

    @property
    def viewers(self) -> int:
        """Viewers on every instance (this one's are exact, the others' as last heard)."""
        return self.state.viewers + self.remote_viewers

    def publish(
        self, events: Sequence[ServerMessage], encoded: Sequence[bytes] | None = None
    ) -> None:
        """Encode each event once and deliver it to every subscriber.

        ``encoded`` has the encodings when the caller made them already; a large room is served
        a slice of subscribers at a time (``rounds``).
        """
        started = time.perf_counter()
        if encoded is None:
            encoded = [encode(event) for event in events]
        self.rounds.publish(zip(events, encoded, strict=True))
        if self.metrics is not None:
            for event in events:
                if type(event) is TurnEnd:
                    self.metrics.turns.labels(event.status).inc()
            self.metrics.publish.observe(time.perf_counter() - started)

    def deliver(self, events: Sequence[SequencedEvent], encoded: Sequence[bytes]) -> None:
        """Publish stored events here: local subscribers have everything up to the last."""
        self.publish(events, encoded)
        self.delivered = events[-1].seq
        self.last_event_at = time.monotonic()

    def history_lost(self) -> None:
        """Close every local subscriber to resume: history it saw is gone.

        PROTOCOL.md's 1011, "reconnect with backoff": the resume gets a snapshot
        (``recovered:false``).
        """
        if self.subscribers:
            log.warning(
                "room %s: history seen by %d subscriber(s) is gone; closing them to resume",
                self.state.name,
                len(self.subscribers),
            )
        for sub in tuple(self.subscribers):
            sub.close(CloseCode.INTERNAL_ERROR, "room history was lost; resume")
        self.delivered = self.state.seq
