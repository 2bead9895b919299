"""Refused frames that close a connection: bad frames (4502) and prompt floods (4001)."""

from __future__ import annotations

import pytest

from server.core.codes import CloseCode
from server.core.refusals import RefusalCount


def test_the_bad_frame_that_reaches_the_limit_closes_4502() -> None:
    """With max_bad=3 the first two bad frames go on and the third closes with 4502."""
    count = RefusalCount(max_bad=3, max_rate_limited=0)
    assert [count.bad_frame() for _ in range(3)] == [None, None, CloseCode.TOO_MANY_BAD_FRAMES]


@pytest.mark.parametrize("code", ["turn_in_progress", "not_found", "turn_ended", "forbidden"])
def test_refusals_for_the_rooms_state_close_nothing(code: str) -> None:
    """Refusals that are not the client's fault never count towards a close."""
    count = RefusalCount(max_bad=1, max_rate_limited=1)
    assert all(count.refused(code) is None for _ in range(5))


def test_a_streak_of_rate_limited_prompts_closes_4001_and_an_accepted_one_resets_it() -> None:
    """Rate-limited prompts in a row close with 4001 at the limit; an accepted prompt resets."""
    count = RefusalCount(max_bad=0, max_rate_limited=3)
    assert [count.refused("rate_limited") for _ in range(2)] == [None, None]
    count.prompt_accepted()
    assert [count.refused("rate_limited") for _ in range(3)] == [None, None, CloseCode.RATE_LIMITED]


def test_zero_means_never() -> None:
    """Limits of 0 never close, however many refusals."""
    count = RefusalCount(max_bad=0, max_rate_limited=0)
    assert all(count.bad_frame() is None for _ in range(50))
    assert all(count.refused("rate_limited") is None for _ in range(50))
