"""The retained event log: what it keeps under its count and byte budgets, what it hands back."""

from __future__ import annotations

import pytest

from server.core.event_log import EventLog
from server.core.messages import ChoiceDelta, Delta
from server.core.room_limits import EVENT_OVERHEAD, RoomLimits


def delta(seq: int, text: str = "x") -> Delta:
    return Delta(seq=seq, turn="t", choices=(ChoiceDelta(index=0, content=text),))


def filled(limits: RoomLimits, count: int, turn_bytes: int = 0) -> EventLog:
    log = EventLog(limits)
    for seq in range(1, count + 1):
        log.append(delta(seq), turn_bytes)
    return log


def test_an_empty_log_starts_after_the_rooms_seq() -> None:
    log = EventLog(RoomLimits())
    assert (list(log), log.first_seq(7), log.after(7, 7), log.after(6, 7)) == ([], 8, (), None)


@pytest.mark.parametrize(
    ("retained", "kept"),
    [(3, [3, 4, 5]), (10, [1, 2, 3, 4, 5]), (0, [5])],  # the newest event always stays
)
def test_the_oldest_go_past_the_count(retained: int, kept: list[int]) -> None:
    log = filled(RoomLimits(retained_events=retained), 5)
    assert [e.seq for e in log] == kept
    assert log.first_seq(5) == kept[0]


def test_the_bytes_the_turns_take_leave_less_for_the_log() -> None:
    size = EVENT_OVERHEAD + 1
    limits = RoomLimits(max_bytes=4 * size)
    assert [e.seq for e in filled(limits, 5)] == [2, 3, 4, 5]
    assert [e.seq for e in filled(limits, 5, turn_bytes=2 * size)] == [4, 5]
    squeezed = filled(limits, 5)
    squeezed.trim(turn_bytes=100 * size)  # over budget on the turns alone: one event stays
    assert [e.seq for e in squeezed] == [5]


@pytest.mark.parametrize(
    ("since", "seqs"),
    [(5, []), (4, [5]), (2, [3, 4, 5]), (1, None), (6, None), (-1, None)],
)
def test_after_hands_back_every_event_or_none(since: int, seqs: list[int] | None) -> None:
    log = filled(RoomLimits(retained_events=3), 5)
    got = log.after(since, 5)
    assert (None if got is None else [e.seq for e in got]) == seqs
