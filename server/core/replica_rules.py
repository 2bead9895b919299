"""The rules of a room across instances: this instance's standing, as a table.

Every instance keeps a replica of each room it serves; the broker holds the room's truth
(its epoch, its events, the turn lease). What an instance does when it hears a record, when a
claim or a write is answered, when its lease is lost or the broker comes back empty, is
decided here, h11-style: the standing is an enum, the transitions are data
(``TRANSITIONS``), inputs are what happened and outputs are actions for the driver
(``server.rooms``) to carry out. Nothing here does I/O or reads a clock.

A wipe (a Redis restarted empty, a ``FLUSHALL``) keeps what the instances hold: the instance
that streams the room's live turn re-seeds the room's new epoch from its replica and streams
on; a room without a live turn is re-seeded by the first instance that holds its replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Standing(StrEnum):
    """What this instance is for one room."""

    UNLOADED = "unloaded"  # no replica yet
    FOLLOWING = "following"  # a replica in step with the broker; it writes nothing
    PRODUCING = "producing"  # it holds the turn lease: the room's only writer
    RELOADING = "reloading"  # the replica must be rebuilt from the broker
    RESEEDING = "reseeding"  # the broker lost the room: storing this replica as its new epoch
    RESEEDING_LIVE = "reseeding_live"  # the same, keeping the lease of the turn it streams


class Input(StrEnum):
    """What happened to the room, as the driver saw it."""

    RECORD_NEXT = "record_next"  # a live record: the next seq of this epoch
    RECORD_AHEAD = "record_ahead"  # a live record past the next seq: some are missing
    RECORD_OLD = "record_old"  # a live record this replica has (its own, or a repeat)
    RECORD_OTHER_EPOCH = "record_other_epoch"  # a live record of another history
    RECONNECTED = "reconnected"  # the live feed was down: anything may have been missed
    READ_GONE = "read_gone"  # the events after this replica's seq are no longer kept
    EPOCH_DIFFERS = "epoch_differs"  # the broker names another epoch (or none)
    LOADED = "loaded"  # the broker's room was read into a fresh replica
    STORE_EMPTY = "store_empty"  # the broker has no history of the room
    STORE_EMPTY_LIVE_TURN = "store_empty_live_turn"  # ... while another instance's turn streams
    SEEDED = "seeded"  # this replica is stored as the room's new epoch
    SEED_TAKEN = "seed_taken"  # the broker has a history of the room again: not ours
    CLAIM_OK = "claim_ok"  # the lease is ours, to start a turn
    CLAIM_KNOWN = "claim_known"  # the prompt's id already started a turn
    CLAIM_BUSY = "claim_busy"  # another instance streams a turn
    CLAIM_STALE = "claim_stale"  # the broker is ahead of this replica
    CLAIM_EPOCH = "claim_epoch"  # the broker's history is not this replica's
    CLAIM_ORPHAN = "claim_orphan"  # a turn streams whose producer stopped renewing its lease
    STEAL_OK = "steal_ok"  # the lease of a streaming turn is ours, to end it
    RELEASED = "released"  # this instance gave back a lease that started nothing
    TURN_ENDED = "turn_ended"  # this instance stored its turn's end: the lease is free
    TURN_ENDED_ELSEWHERE = "turn_ended_elsewhere"  # a record ended the turn produced here
    WRITE_REFUSED = "write_refused"  # a write was fenced (lease, seq or epoch)
    WRITE_TIMED_OUT = "write_timed_out"  # the broker stayed down for the lease's length
    LEASE_LOST = "lease_lost"  # renewing the lease was refused
    ABANDONED = "abandoned"  # the runner left its turn unended: give the room back


class Action(StrEnum):
    """What the driver does, in the order given."""

    APPLY = "apply"  # apply the record to the replica and deliver it
    READ_AFTER = "read_after"  # read the events after the replica's seq
    RELOAD = "reload"  # rebuild the replica from the broker
    LOAD_NEW = "load_new"  # load the room, creating it (this instance knows nothing of it)
    RESEED = "reseed"  # store the replica as the room's new epoch
    RESEED_LIVE = "reseed_live"  # the same, with the live turn's lease: it streams on here
    WAIT = "wait"  # try again later (the producer may re-seed first)
    NEW_EPOCH = "new_epoch"  # the replica's history is the new epoch: resume its viewers
    TAKE_FENCE = "take_fence"  # the lease's fence is this instance's (``ReplicaRules.fence``)
    DROP_FENCE = "drop_fence"  # the fence is no longer this instance's
    STOP_UPSTREAM = "stop_upstream"  # stop the turn's runner here
    ANSWER_KNOWN = "answer_known"  # answer with the turn the prompt's id started
    REFUSE_BUSY = "refuse_busy"  # turn_in_progress
    RETRY_CLAIM = "retry_claim"  # claim again, after the actions before this one
    END_ORPHAN = "end_orphan"  # take the lease of a dead producer's turn and end it


@dataclass(frozen=True, slots=True)
class Step:
    """One transition: the standing after it, and what to do."""

    then: Standing
    actions: tuple[Action, ...] = ()


S, In, A = Standing, Input, Action
_LOST = Step(S.RELOADING, (A.DROP_FENCE, A.STOP_UPSTREAM, A.RELOAD))
_HEARD_LIVE = {
    In.RECORD_NEXT: Step(S.FOLLOWING, (A.APPLY,)),
    In.RECORD_AHEAD: Step(S.FOLLOWING, (A.READ_AFTER,)),
    In.RECORD_OLD: Step(S.FOLLOWING),
    In.RECORD_OTHER_EPOCH: Step(S.RELOADING, (A.RELOAD,)),
    In.RECONNECTED: Step(S.FOLLOWING, (A.READ_AFTER,)),
    In.READ_GONE: Step(S.RELOADING, (A.RELOAD,)),
    In.EPOCH_DIFFERS: Step(S.RELOADING, (A.RELOAD,)),
}
_CLAIMS = {
    In.CLAIM_OK: Step(S.PRODUCING, (A.TAKE_FENCE,)),
    In.CLAIM_KNOWN: Step(S.FOLLOWING, (A.ANSWER_KNOWN,)),
    In.CLAIM_BUSY: Step(S.FOLLOWING, (A.REFUSE_BUSY,)),
    In.CLAIM_STALE: Step(S.FOLLOWING, (A.READ_AFTER, A.RETRY_CLAIM)),
    In.CLAIM_EPOCH: Step(S.RELOADING, (A.RELOAD, A.RETRY_CLAIM)),
    In.CLAIM_ORPHAN: Step(S.FOLLOWING, (A.END_ORPHAN, A.RETRY_CLAIM)),
    In.STEAL_OK: Step(S.PRODUCING, (A.TAKE_FENCE,)),
}
_RELOAD_ANSWERS = {
    In.LOADED: Step(S.FOLLOWING),
    In.STORE_EMPTY: Step(S.RESEEDING, (A.RESEED,)),
    # Another instance streams the room's live turn: it re-seeds the room with it. Only
    # when it has not within a lease (it died with the broker) does this replica.
    In.STORE_EMPTY_LIVE_TURN: Step(S.RELOADING, (A.WAIT,)),
    # Anything heard while reloading: read again once the reload is done.
    In.RECORD_NEXT: Step(S.RELOADING, (A.READ_AFTER,)),
    In.RECORD_AHEAD: Step(S.RELOADING, (A.READ_AFTER,)),
    In.RECORD_OLD: Step(S.RELOADING),
    In.RECORD_OTHER_EPOCH: Step(S.RELOADING, (A.READ_AFTER,)),
    In.RECONNECTED: Step(S.RELOADING, (A.READ_AFTER,)),
    In.READ_GONE: Step(S.RELOADING, (A.RELOAD,)),
    In.EPOCH_DIFFERS: Step(S.RELOADING, (A.RELOAD,)),
}

TRANSITIONS: dict[tuple[Standing, Input], Step] = {
    # Before the first load, nothing heard counts: the load reads it all.
    (S.UNLOADED, In.LOADED): Step(S.FOLLOWING),
    (S.UNLOADED, In.STORE_EMPTY): Step(S.UNLOADED, (A.LOAD_NEW,)),
    (S.UNLOADED, In.STORE_EMPTY_LIVE_TURN): Step(S.UNLOADED, (A.LOAD_NEW,)),
    **{(S.FOLLOWING, i): step for i, step in {**_HEARD_LIVE, **_CLAIMS}.items()},
    (S.FOLLOWING, In.LOADED): Step(S.FOLLOWING),
    (S.FOLLOWING, In.ABANDONED): Step(S.RELOADING, (A.RELOAD,)),
    **{(S.RELOADING, i): step for i, step in _RELOAD_ANSWERS.items()},
    # A claim answered while a reload is due: the lease means the replica is the broker's
    # (same epoch, same seq); anything else leaves the reload due.
    (S.RELOADING, In.CLAIM_OK): Step(S.PRODUCING, (A.TAKE_FENCE,)),
    (S.RELOADING, In.CLAIM_KNOWN): Step(S.RELOADING, (A.ANSWER_KNOWN,)),
    (S.RELOADING, In.CLAIM_BUSY): Step(S.RELOADING, (A.REFUSE_BUSY,)),
    (S.RELOADING, In.CLAIM_STALE): Step(S.RELOADING, (A.RELOAD, A.RETRY_CLAIM)),
    (S.RELOADING, In.CLAIM_EPOCH): Step(S.RELOADING, (A.RELOAD, A.RETRY_CLAIM)),
    (S.RELOADING, In.CLAIM_ORPHAN): Step(S.RELOADING, (A.END_ORPHAN, A.RETRY_CLAIM)),
    (S.RELOADING, In.STEAL_OK): Step(S.PRODUCING, (A.TAKE_FENCE,)),
    (S.RELOADING, In.ABANDONED): Step(S.RELOADING, (A.RELOAD,)),
    # The only writer: its own records come back (old); another's next record can only
    # end its turn (a cancel elsewhere); a new epoch shows in its next write.
    (S.PRODUCING, In.RECORD_NEXT): Step(S.PRODUCING, (A.APPLY,)),
    (S.PRODUCING, In.RECORD_AHEAD): Step(S.PRODUCING),
    (S.PRODUCING, In.RECORD_OLD): Step(S.PRODUCING),
    (S.PRODUCING, In.RECORD_OTHER_EPOCH): Step(S.PRODUCING),
    (S.PRODUCING, In.RECONNECTED): Step(S.PRODUCING),
    (S.PRODUCING, In.CLAIM_KNOWN): Step(S.PRODUCING, (A.ANSWER_KNOWN,)),
    (S.PRODUCING, In.CLAIM_BUSY): Step(S.PRODUCING, (A.REFUSE_BUSY,)),
    (S.PRODUCING, In.TURN_ENDED): Step(S.FOLLOWING, (A.DROP_FENCE,)),
    (S.PRODUCING, In.TURN_ENDED_ELSEWHERE): Step(S.FOLLOWING, (A.DROP_FENCE, A.STOP_UPSTREAM)),
    (S.PRODUCING, In.RELEASED): Step(S.FOLLOWING, (A.DROP_FENCE,)),
    (S.PRODUCING, In.ABANDONED): Step(S.RELOADING, (A.DROP_FENCE, A.RELOAD)),
    (S.PRODUCING, In.WRITE_TIMED_OUT): _LOST,
    # A refused write or a lost lease: lost for good, unless the broker lost the room (then
    # this instance, which holds the live turn, stores it as the new epoch and streams on;
    # the broker refuses the seed when the room has a history, and the turn is lost).
    (S.PRODUCING, In.WRITE_REFUSED): Step(S.RESEEDING_LIVE, (A.RESEED_LIVE,)),
    (S.PRODUCING, In.LEASE_LOST): Step(S.RESEEDING_LIVE, (A.RESEED_LIVE,)),
    (S.RESEEDING_LIVE, In.SEEDED): Step(S.PRODUCING, (A.TAKE_FENCE, A.NEW_EPOCH)),
    (S.RESEEDING_LIVE, In.SEED_TAKEN): _LOST,
    (S.RESEEDING_LIVE, In.WRITE_TIMED_OUT): _LOST,
    (S.RESEEDING_LIVE, In.ABANDONED): Step(S.RELOADING, (A.DROP_FENCE, A.RELOAD)),
    (S.RESEEDING, In.SEEDED): Step(S.FOLLOWING, (A.NEW_EPOCH,)),
    (S.RESEEDING, In.SEED_TAKEN): Step(S.RELOADING, (A.RELOAD,)),
    (S.RESEEDING, In.WRITE_TIMED_OUT): Step(S.RELOADING, (A.RELOAD,)),
}


class ReplicaRules:
    """One room's standing on this instance, and the lease's fence while it produces."""

    __slots__ = ("fence", "standing")

    def __init__(self) -> None:
        self.standing = Standing.UNLOADED
        self.fence = 0

    @property
    def producing(self) -> bool:
        """Whether this instance holds the room's turn lease (it may write)."""
        return self.fence != 0

    def on(self, what: Input, fence: int = 0) -> tuple[Action, ...]:
        """Take one input; return what to do.

        An input the standing does not expect changes nothing (say, a record heard for a room
        being reloaded anyway).

        Args:
            what: what happened.
            fence: the lease's fence, with ``CLAIM_OK``, ``STEAL_OK`` and ``SEEDED``.
        """
        step = TRANSITIONS.get((self.standing, what))
        if step is None:
            return ()
        self.standing = step.then
        if Action.TAKE_FENCE in step.actions:
            self.fence = fence
        elif Action.DROP_FENCE in step.actions:
            self.fence = 0
        return step.actions

    def need_reload(self) -> tuple[Action, ...]:
        """The replica must be rebuilt (a reload asked for outside the table's inputs)."""
        if self.standing is Standing.FOLLOWING:
            self.standing = Standing.RELOADING
        return (Action.RELOAD,) if self.standing is Standing.RELOADING else ()


def heard(same_epoch: bool, seq: int, replica_seq: int) -> Input:
    """Classify a live record against the replica."""
    if not same_epoch:
        return Input.RECORD_OTHER_EPOCH
    if seq == replica_seq + 1:
        return Input.RECORD_NEXT
    return Input.RECORD_AHEAD if seq > replica_seq else Input.RECORD_OLD


def store_empty(*, live_turn_elsewhere: bool, waited: float, lease_seconds: float) -> Input:
    """Classify a broker that has no history of a room this instance holds a replica of.

    Args:
        live_turn_elsewhere: the replica has a turn streaming that another instance produces.
        waited: seconds since this instance first found the room empty.
        lease_seconds: how long a turn lease lasts: its producer re-seeds within it, or died.
    """
    if live_turn_elsewhere and waited < lease_seconds:
        return Input.STORE_EMPTY_LIVE_TURN
    return Input.STORE_EMPTY


def runner_done(*, producing: bool, writing: bool, unended: bool) -> Input | None:
    """Classify a turn's runner finishing on the instance that produced the turn.

    Storing a turn's end gives the lease up; still holding it, with no write on its way (a
    cancel's ``turn.end`` may be), while the turn streams or nothing does, means its end was
    never stored (the runner failed past its own error handling, or storing the end failed
    after the replica ended it): ``ABANDONED``, so the room is given back, not left to it.

    Args:
        producing: this instance still holds the turn lease.
        writing: a write of this instance is on its way to the broker.
        unended: the replica's streaming turn is the runner's, or none.
    """
    return Input.ABANDONED if producing and not writing and unended else None


CLAIM_INPUTS: dict[str, Input] = {
    "ok": Input.CLAIM_OK,
    "known": Input.CLAIM_KNOWN,
    "busy": Input.CLAIM_BUSY,
    "stale": Input.CLAIM_STALE,
    "epoch": Input.CLAIM_EPOCH,
    "orphan": Input.CLAIM_ORPHAN,
}
