"""The rules of a room across instances (``core.replica_rules``), and the seed of a wiped room.

The table is checked as data (every entry is reachable and well formed) and walked through the
stories it exists for: following, producing, a reload, a wipe with and without a live turn.
"""

from __future__ import annotations

import pytest

from server.core.messages import Delta, TurnStart
from server.core.replica_rules import (
    CLAIM_INPUTS,
    TRANSITIONS,
    Action,
    Input,
    ReplicaRules,
    Standing,
    heard,
    runner_done,
    store_empty,
)
from server.core.room import RoomState
from server.core.types import RoomName, TurnId
from tests.unit.room_helpers import DONE, feed, make_room, run_turn, start, text

A, In, S = Action, Input, Standing


def where(rules: ReplicaRules) -> Standing:
    """The standing now (read through a call, so that a type checker does not narrow it)."""
    return rules.standing


def at(standing: Standing, fence: int = 0) -> ReplicaRules:
    """Rules standing at ``standing`` (with ``fence`` when it produces)."""
    rules = ReplicaRules()
    rules.standing, rules.fence = standing, fence
    return rules


def test_every_transition_is_well_formed() -> None:
    """Each step's actions are taken in order; a fence is taken only to produce."""
    for (standing, what), step in TRANSITIONS.items():
        assert isinstance(standing, Standing)
        assert isinstance(what, Input)
        if A.TAKE_FENCE in step.actions:
            assert step.then is S.PRODUCING, (standing, what)
            assert A.DROP_FENCE not in step.actions
        if step.then is S.PRODUCING:
            assert standing in (S.PRODUCING, S.FOLLOWING, S.RELOADING, S.RESEEDING_LIVE)
        if A.RETRY_CLAIM in step.actions:
            assert step.actions[-1] is A.RETRY_CLAIM  # after what it waits for
        if A.STOP_UPSTREAM in step.actions:
            assert A.DROP_FENCE in step.actions  # whoever stops the upstream gives up the lease


def test_every_standing_is_reached_and_left() -> None:
    """No standing is a dead end, and each but the first is entered by some step."""
    entered = {step.then for step in TRANSITIONS.values()}
    left = {standing for standing, _ in TRANSITIONS}
    assert left == set(Standing)
    assert entered == set(Standing)


def test_an_unexpected_input_changes_nothing() -> None:
    """An input the standing has no step for is ignored: no action, same standing, same fence."""
    for standing in Standing:
        for what in Input:
            if (standing, what) in TRANSITIONS:
                continue
            rules = at(standing, 7)
            assert rules.on(what, 9) == ()
            assert (where(rules), rules.fence) == (standing, 7)


@pytest.mark.parametrize("key", list(TRANSITIONS))
def test_on_follows_the_table(key: tuple[Standing, Input]) -> None:
    """``on`` moves to the step's standing, returns its actions and keeps the fence rule."""
    standing, what = key
    rules = at(standing, 5 if standing in (S.PRODUCING, S.RESEEDING_LIVE) else 0)
    actions = rules.on(what, 11)
    assert (where(rules), actions) == (TRANSITIONS[key].then, TRANSITIONS[key].actions)
    if A.TAKE_FENCE in actions:
        assert rules.fence == 11
        assert rules.producing
    elif A.DROP_FENCE in actions:
        assert rules.fence == 0
        assert not rules.producing


def test_a_follower_applies_in_order_and_reads_what_it_missed() -> None:
    """Following: the next record is applied, a gap read, an old one ignored; an epoch reloads."""
    rules = ReplicaRules()
    assert rules.on(In.STORE_EMPTY) == (A.LOAD_NEW,)  # a room nobody made yet: create it
    assert where(rules) is S.UNLOADED
    assert rules.on(In.LOADED) == ()
    assert rules.on(heard(True, 4, 3)) == (A.APPLY,)
    assert rules.on(heard(True, 9, 4)) == (A.READ_AFTER,)
    assert rules.on(heard(True, 2, 4)) == ()
    assert rules.on(In.RECONNECTED) == (A.READ_AFTER,)
    assert where(rules) is S.FOLLOWING
    assert rules.on(heard(False, 5, 4)) == (A.RELOAD,)
    assert where(rules) is S.RELOADING
    assert rules.on(heard(True, 5, 4)) == (A.READ_AFTER,)  # read again once reloaded
    assert rules.on(In.LOADED) == ()
    assert where(rules) is S.FOLLOWING


def test_a_producer_writes_alone_until_its_turn_ends() -> None:
    """A claim gives the fence; records heard while producing are its own; the end frees it."""
    rules = at(S.FOLLOWING)
    assert rules.on(CLAIM_INPUTS["ok"], 3) == (A.TAKE_FENCE,)
    assert (where(rules), rules.fence) == (S.PRODUCING, 3)
    assert rules.on(heard(True, 2, 5)) == ()
    assert rules.on(In.RECONNECTED) == ()
    assert rules.on(CLAIM_INPUTS["busy"]) == (A.REFUSE_BUSY,)
    assert rules.on(In.TURN_ENDED) == (A.DROP_FENCE,)
    assert (where(rules), rules.fence) == (S.FOLLOWING, 0)
    assert rules.on(CLAIM_INPUTS["stale"]) == (A.READ_AFTER, A.RETRY_CLAIM)
    assert rules.on(CLAIM_INPUTS["orphan"]) == (A.END_ORPHAN, A.RETRY_CLAIM)
    assert rules.on(CLAIM_INPUTS["epoch"]) == (A.RELOAD, A.RETRY_CLAIM)
    assert rules.on(CLAIM_INPUTS["ok"], 4) == (A.TAKE_FENCE,)  # the lease proves it current
    assert rules.on(In.TURN_ENDED_ELSEWHERE) == (A.DROP_FENCE, A.STOP_UPSTREAM)


def test_a_wipe_under_a_live_turn_keeps_it_streaming_on_its_producer() -> None:
    """The producer's refused write re-seeds the room with its turn and streams on."""
    rules = at(S.PRODUCING, 8)
    assert rules.on(In.WRITE_REFUSED) == (A.RESEED_LIVE,)
    assert where(rules) is S.RESEEDING_LIVE
    assert rules.on(In.SEEDED, 1) == (A.TAKE_FENCE, A.NEW_EPOCH)
    assert (where(rules), rules.fence) == (S.PRODUCING, 1)
    # A lost lease is the same question; another instance seeded first: the turn is lost.
    assert rules.on(In.LEASE_LOST) == (A.RESEED_LIVE,)
    assert rules.on(In.SEED_TAKEN) == (A.DROP_FENCE, A.STOP_UPSTREAM, A.RELOAD)
    assert (where(rules), rules.fence) == (S.RELOADING, 0)


def test_a_wipe_seen_by_a_follower_waits_for_the_producer_then_seeds_itself() -> None:
    """A follower of a live turn waits a lease for its producer; an idle room it seeds itself."""
    rules = at(S.RELOADING)
    live = store_empty(live_turn_elsewhere=True, waited=0.5, lease_seconds=2.0)
    assert rules.on(live) == (A.WAIT,)
    assert where(rules) is S.RELOADING
    dead = store_empty(live_turn_elsewhere=True, waited=2.0, lease_seconds=2.0)
    assert dead is In.STORE_EMPTY
    assert store_empty(live_turn_elsewhere=False, waited=0.0, lease_seconds=2.0) is dead
    assert rules.on(dead) == (A.RESEED,)
    assert where(rules) is S.RESEEDING
    assert rules.on(In.SEED_TAKEN) == (A.RELOAD,)  # another replica was stored first: read it
    rules.standing = S.RESEEDING
    assert rules.on(In.SEEDED) == (A.NEW_EPOCH,)
    assert (where(rules), rules.fence) == (S.FOLLOWING, 0)


def test_need_reload_only_from_a_standing_that_reads() -> None:
    """A reload asked for from outside the table leaves a producer and a seeder alone."""
    following = at(S.FOLLOWING)
    assert following.need_reload() == (A.RELOAD,)
    assert following.standing is S.RELOADING
    assert following.need_reload() == (A.RELOAD,)
    assert at(S.UNLOADED).need_reload() == ()
    producing = at(S.PRODUCING, 2)
    assert producing.need_reload() == ()
    assert (producing.standing, producing.fence) == (S.PRODUCING, 2)


def test_claim_inputs_cover_every_claim_answer() -> None:
    """Every answer ``claim`` gives maps to an input (steal's own answers are not claims)."""
    assert set(CLAIM_INPUTS) == {"ok", "known", "busy", "stale", "epoch", "orphan"}
    assert all(step in In for step in CLAIM_INPUTS.values())


def seeded(room: RoomState, epoch: str = "e2") -> RoomState:
    """The room a broker holds after storing ``room``'s seed as ``epoch``."""
    return RoomState.restore(RoomName("r"), epoch, room.seed_view(30.0))


def test_a_seed_keeps_the_ended_turns_and_the_live_turn_so_far() -> None:
    """A replica seeded mid-turn has the same snapshot, and the live turn streams on there."""
    room = make_room()
    run_turn(room, "t1", "first answer")
    start(room, "t2", content="second")
    feed(room, "t2", text("par"), text("tial"))
    copy = seeded(room)
    assert copy.seq == room.seq
    assert copy.turn_count == room.turn_count
    assert copy.snapshot().turns == room.snapshot().turns
    assert copy.streaming_turn == "t2"
    for state in (room, copy):
        feed(state, "t2", text(" end", finish="stop"), DONE)
    assert copy.snapshot().turns == room.snapshot().turns
    assert copy.seq == room.seq
    # The seed is a turn.start and one delta with the text so far, ending at the room's seq.
    events = [e for e, _ in room.seed_view(1.0).events]
    assert events == []  # nothing streams now: the ended turns say it all


def test_a_seed_of_a_turn_with_no_text_yet_is_its_start_alone() -> None:
    """Seeded right after its start, a turn is its turn.start at the room's seq."""
    room = make_room()
    start(room, "t1")
    view = room.seed_view(1.0)
    assert [type(e) for e, _ in view.events] == [TurnStart]
    assert view.events[0][0].seq == room.seq
    feed(room, "t1", text("abc"))
    events = [e for e, _ in room.seed_view(1.0).events]
    assert [type(e) for e in events] == [TurnStart, Delta]
    assert [e.seq for e in events] == [room.seq - 1, room.seq]
    assert seeded(room).turns.view(TurnId("t1")) == room.turns.view(TurnId("t1"))


def test_an_idle_room_seeds_its_ended_turns_alone() -> None:
    """An idle room's seed is its ended turns, its seq and count; the copy takes a new turn."""
    room = make_room()
    run_turn(room, "t1", "one")
    run_turn(room, "t2", "two")
    copy = seeded(room)
    assert copy.snapshot().turns == room.snapshot().turns
    assert (copy.seq, copy.turn_count, copy.streaming_turn) == (room.seq, 2, None)
    run_turn(copy, "t3", "three")
    assert [t.id for t in copy.snapshot().turns][-1] == "t3"


@pytest.mark.parametrize(
    ("producing", "writing", "unended", "what"),
    [
        (True, False, True, Input.ABANDONED),  # the end was never stored: give the room back
        (True, True, True, None),  # a write is on its way (a cancel's turn.end)
        (True, False, False, None),  # another turn streams now: not this runner's business
        (False, False, True, None),  # the lease is no longer held: nothing to give back
    ],
)
def test_a_runner_that_left_its_turn_unended_abandons_it(
    producing: bool, writing: bool, unended: bool, what: Input | None
) -> None:
    assert runner_done(producing=producing, writing=writing, unended=unended) is what
