"""A subscriber's bounded outbox and its slow-consumer policy (sans-I/O).

Every rule about a subscriber that falls behind lives here (PROTOCOL.md, ``first_seq``: "a
subscriber that falls behind gets its queued deltas merged first; only when its backlog still
exceeds the outbox limit ... is it closed with 4000"). The driver (``server.rooms.subscriber``)
passes in what it sees of its socket and carries out the answers.

1. **Behind**: bytes wait in the subscriber's transport (its socket is backed up), its writer
   holds a coalescing window open, or ``behind_frames`` frames wait in its queue.
2. **Tail merge**: behind, a delta joins the queue's tail when the tail is an unsent delta (or
   run of deltas) of the same turn that it continues (its ``first_seq`` is the tail's ``seq``
   + 1). Joining is O(1): the run keeps its parts, which every subscriber shares, and is
   merged and encoded once, when the writer takes it. A stalled reader's backlog grows
   O(turns), not O(deltas). A subscriber that keeps up gets the one shared encoding.
3. **Limit**: the backlog is the queue's bytes (a run counts as its merged frame) plus the
   bytes waiting in the transport. Over the limit, every run of consecutive deltas of one turn
   in the queue is merged; still over, ``push`` answers False and the driver closes with 4000
   (the client resumes from its last seq).
4. **Join burst**: what a new subscriber is sent first (welcome, then the snapshot or the
   replay) is what the room holds, not how far behind the subscriber is: it never counts
   against the limit, in the queue or in the transport, until it has been sent. Otherwise a
   big snapshot, or the replay of a client that resumes after a 4000, would close it again.
5. **Coalescing**: a writer that wakes to a delta at the tail may hold a short window open so
   the deltas that follow join it; anything else is written at once.
"""

from __future__ import annotations

from collections import deque

from .codec import encode
from .framesize import FIRST_SEQ_FIELD, digits, text_bytes
from .merge import merge_deltas
from .messages import Delta, ServerMessage

# Queued frames that mean "behind" even when the socket is not backed up (0 = no such rule).
BEHIND_FRAMES = 8


class _Run:
    """Consecutive deltas of one turn that go out as one merged frame."""

    __slots__ = ("deltas", "size", "text")

    def __init__(self, deltas: list[Delta], size: int, text: int) -> None:
        self.deltas = deltas
        self.size = size  # bytes of the merged frame
        self.text = text  # bytes of the parts' text (see framesize)


_Entry = tuple[ServerMessage, bytes] | _Run


def _single_run(entry: _Entry) -> _Run | None:
    """A queued delta as a run of one (None for anything else)."""
    if isinstance(entry, _Run):
        return entry
    msg, data = entry
    if not isinstance(msg, Delta):
        return None
    size = len(data)
    if msg.first_seq is None or msg.first_seq == msg.seq:
        size += FIRST_SEQ_FIELD + digits(msg.seq)  # merged, it gains a first_seq
    return _Run([msg], size, text_bytes(msg, data))


def _continues(run: _Run, delta: Delta) -> bool:
    """Whether ``delta`` is the next event after ``run``, in the same turn."""
    last = run.deltas[-1]
    start = delta.seq if delta.first_seq is None else delta.first_seq
    return delta.turn == last.turn and start == last.seq + 1


def _extend(run: _Run, deltas: list[Delta], text: int) -> None:
    run.size += text + digits(deltas[-1].seq) - digits(run.deltas[-1].seq)
    run.text += text
    run.deltas.extend(deltas)


# The queue of a subscriber that keeps up: shared, and never appended to (``push`` gives an
# outbox its own deque first), so an idle subscriber holds no deque of its own (about 600 bytes).
_NO_ITEMS: deque[_Entry] = deque()


def _size(entry: _Entry) -> int:
    return entry.size if isinstance(entry, _Run) else len(entry[1])


class Outbox:
    """Queued frames of one subscriber, bounded in bytes (``limit`` 0 = unbounded).

    ``push`` never blocks: the fan-out loop calls it for every subscriber and must not wait on
    any of them.
    """

    __slots__ = (
        "_burst",
        "_items",
        "_popped",
        "behind_frames",
        "coalescing",
        "joining",
        "limit",
        "merged",
        "peak",
        "size",
    )

    def __init__(
        self, limit: int, behind_frames: int = BEHIND_FRAMES, *, joining: bool = False
    ) -> None:
        """An empty outbox.

        Args:
            limit: the most bytes the backlog may hold (0 = unbounded).
            behind_frames: queued frames that mean "behind" (0 = only backpressure counts).
            joining: the join burst comes first, free of the limit, until ``joined()``.
        """
        self._items = _NO_ITEMS
        self.limit = limit
        self.behind_frames = behind_frames
        self.joining = joining
        self._burst = 0  # bytes of the join burst, until all of them are sent
        self._popped = 0  # bytes popped since the join burst was sealed
        self.coalescing = False  # set by the writer while it holds a coalescing window open
        self.size = 0  # bytes queued, runs counted as their merged frame
        self.merged = 0  # deltas folded into the delta before them
        self.peak = 0  # the largest accepted backlog (queue and transport)

    def __len__(self) -> int:
        return len(self._items)

    def push(self, msg: ServerMessage, data: bytes, in_flight: int = 0) -> bool:
        """Queue one encoded message; False when the backlog exceeds the limit even merged.

        Args:
            msg: the message, for the merge rules.
            data: its encoding, shared with every other subscriber.
            in_flight: bytes handed to the transport and not yet sent.
        """
        items = self._items
        if items is _NO_ITEMS:
            items = self._items = deque()
        if not (
            items
            and isinstance(msg, Delta)
            and (in_flight > 0 or self.coalescing or 0 < self.behind_frames <= len(items))
            and self._join_tail(msg, data)
        ):
            items.append((msg, data))
            self.size += len(data)
        if self.joining:
            return True
        backlog = self._backlog(in_flight) if self._burst else self.size + in_flight
        if self.limit and backlog > self.limit:
            self._compact()
            backlog = self._backlog(in_flight) if self._burst else self.size + in_flight
            if backlog > self.limit:
                return False
        if backlog > self.peak:
            self.peak = backlog
        return True

    def bypass(self, in_flight: int) -> bool:
        """Whether a frame may skip the queue and be written at once (the common case).

        Only for a subscriber that keeps up: nothing queued, no join burst being queued, no
        coalescing window open, nothing waiting in the transport. Then every frame it gets is
        the one shared encoding, written without waking its writer.
        """
        if self._items or self.joining or self.coalescing or in_flight:
            return False
        self._burst = 0  # whatever the join burst was, it has all been sent
        return True

    def joined(self) -> None:
        """The join burst is all queued: it stays free of the limit until it has been sent."""
        if self.joining:
            self.joining = False
            self._burst = self.size
            self._popped = 0

    @property
    def sending_burst(self) -> bool:
        """Whether join-burst bytes may still wait (so ``push`` needs ``in_flight``)."""
        return self._burst > 0

    def _backlog(self, in_flight: int) -> int:
        # FIFO: the burst goes first, so what has left the transport is burst bytes first.
        unsent_burst = self._burst - (self._popped - in_flight)
        if unsent_burst <= 0:
            self._burst = 0
            return self.size + in_flight
        return self.size + in_flight - min(unsent_burst, self._burst)

    def pop(self) -> bytes | None:
        """The next frame to write (a run merged and encoded now), or None when empty."""
        if not self._items:
            return None
        entry = self._items.popleft()
        if not self._items:
            self._items = _NO_ITEMS  # drained: give the deque back
        size = _size(entry)
        self.size -= size
        self._popped += size
        return encode(merge_deltas(entry.deltas)) if isinstance(entry, _Run) else entry[1]

    def clear(self) -> None:
        """Drop the backlog (the subscriber is being closed and will resume)."""
        self._items = _NO_ITEMS
        self.size = 0
        self._burst = 0

    def coalescible(self) -> bool:
        """Whether a writer should hold a window open: the tail is a delta more may join."""
        if not self._items:
            return False
        tail = self._items[-1]
        return isinstance(tail, _Run) or isinstance(tail[0], Delta)

    def _join_tail(self, msg: Delta, data: bytes) -> bool:
        tail = self._items[-1]
        run = _single_run(tail)
        if run is None or not _continues(run, msg):
            return False
        before = _size(tail)
        _extend(run, [msg], text_bytes(msg, data))
        self._items[-1] = run
        self.size += run.size - before
        self.merged += 1
        return True

    def _compact(self) -> None:
        """Merge every run of consecutive deltas of one turn in the queue."""
        out: deque[_Entry] = deque()
        for entry in self._items:
            if out:
                run = _single_run(out[-1])
                other = _single_run(entry)
                if run is not None and other is not None and _continues(run, other.deltas[0]):
                    _extend(run, other.deltas, other.text)
                    self.merged += len(other.deltas)
                    out[-1] = run
                    continue
            out.append(entry)
        self._items = out
        self.size = sum(_size(e) for e in out)
