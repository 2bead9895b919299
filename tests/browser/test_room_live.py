"""The room page live: two viewers, late joiners, Stop, and how turns are drawn."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import expect

from tests.integration.fake_upstream import (
    ANSWER,
    FakeUpstream,
    Script,
    chunk,
    text_stream,
    usage_chunk,
)

from .conftest import OpenRoom

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

FULL = "".join(ANSWER)
WORDS = ["word0", *(f" word{i}" for i in range(1, 40))]
LONG = "".join(WORDS)


async def test_two_contexts_in_one_room_show_the_same_final_text(
    open_room: OpenRoom, upstream: FakeUpstream
) -> None:
    """One page prompts; both pages show the same final answer from one upstream request."""
    upstream.always(Script(chunks=text_stream(ANSWER), gap=0.03))
    a = await open_room("duo")
    b = await open_room("duo")
    for p in (a, b):
        await expect(p.page.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(a.page.locator("#viewers")).to_have_text("2 viewers")
    await a.prompt("Say hello")
    for p in (a, b):
        await expect(p.turn()).to_have_attribute("data-status", "completed")
        await expect(p.answer()).to_have_text(FULL)
        assert await p.answer().text_content() == FULL
        await expect(p.turn().locator(".prompt-text")).to_have_text("Say hello")
        await expect(p.turn().locator(".usage")).to_have_text(
            "10 prompt + 20 completion = 30 tokens"
        )
        await expect(p.turn().locator(".badge")).to_have_count(0)
        assert p.unexpected_problems() == []
    assert len(upstream.requests) == 1
    assert upstream.requests[0]["messages"][-1] == {"role": "user", "content": "Say hello"}


async def test_copy_button_copies_the_markdown_source(
    open_room: OpenRoom, upstream: FakeUpstream
) -> None:
    """The Copy button puts the answer's Markdown source on the clipboard."""
    upstream.always(Script(chunks=text_stream(["**bold**", " and `code`"])))
    page = await open_room("copy")
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await page.prompt("format something")
    await expect(page.answer().locator("strong")).to_have_text("bold")
    await page.turn().get_by_role("button", name="Copy").click()
    await expect(page.turn().get_by_role("button", name="Copied")).to_be_visible()
    assert await page.page.evaluate("navigator.clipboard.readText()") == "**bold** and `code`"


async def test_a_page_opened_mid_stream_shows_the_whole_answer(
    open_room: OpenRoom, upstream: FakeUpstream
) -> None:
    """A page opened while a turn streams shows the snapshot's text, then the rest, once."""
    upstream.always(Script(chunks=text_stream(WORDS), gap=0.03))
    first = await open_room("late")
    await expect(first.page.locator("#conn")).to_have_attribute("data-state", "live")
    await first.prompt("Count")
    await expect(first.answer()).to_contain_text("word5")
    late = await open_room("late")
    await expect(late.turn()).to_have_attribute("data-status", "streaming")
    for p in (first, late):
        await expect(p.turn()).to_have_attribute("data-status", "completed")
        assert await p.answer().text_content() == LONG
        assert await p.model_text() == LONG
        assert p.unexpected_problems() == []
    stats = await late.stats()
    assert stats["snapshots"] == 1
    assert stats["gaps"] == 0
    assert stats["duplicates"] == 0


async def test_stop_cancels_the_turn_and_the_upstream_request(
    open_room: OpenRoom, upstream: FakeUpstream
) -> None:
    """Stop ends the turn as cancelled on every page and closes the upstream request."""
    upstream.always(Script(chunks=text_stream(ANSWER * 50), gap=0.02))
    a = await open_room("stop")
    b = await open_room("stop")
    await expect(b.page.locator("#conn")).to_have_attribute("data-state", "live")
    await a.prompt("Go on and on")
    stop = a.page.get_by_role("button", name="Stop")
    await expect(stop).to_be_visible()
    await expect(a.answer()).to_contain_text("Hello")
    await stop.click()
    for p in (a, b):
        await expect(p.turn().locator('.badge[data-kind="cancelled"]')).to_have_text("cancelled")
        await expect(p.page.get_by_role("button", name="Stop")).to_be_hidden()
        await expect(p.page.get_by_role("button", name="Send")).to_be_visible()
        assert p.unexpected_problems() == []
    await asyncio.wait_for(upstream.disconnected.wait(), 5)
    assert upstream.completed == 0
    # Cut short: what the pages show is a strict prefix of what the upstream would have sent.
    shown = await a.model_text()
    assert (FULL * 50).startswith(shown)
    assert 0 < len(shown) < len(FULL * 50)
    assert await b.model_text() == shown


def _tool_delta(**fields: object) -> dict[str, object]:
    return {"index": 0, "type": "function", **fields}


async def test_choices_reasoning_tool_calls_and_badges_are_drawn(
    open_room: OpenRoom, upstream: FakeUpstream
) -> None:
    """n=2 choices side by side, reasoning folded, a pretty tool call, finish badges, usage."""
    upstream.always(
        Script(
            chunks=[
                chunk(role="assistant", content=""),
                chunk(role="assistant", content="", index=1),
                chunk(reasoning_content="Think of the weather. "),
                chunk(reasoning_content="Then call a tool."),
                chunk("Let me check.", index=0),
                chunk("Second ", index=1),
                chunk(tool_calls=[_tool_delta(id="call_1", function={"name": "get_weather"})]),
                chunk(tool_calls=[_tool_delta(function={"arguments": '{"city":'})]),
                chunk(tool_calls=[_tool_delta(function={"arguments": ' "Paris"}'})]),
                chunk("answer", index=1),
                chunk(finish="tool_calls"),
                chunk(index=1, finish="length"),
                usage_chunk(7, 9),
                "data: [DONE]\n\n",
            ],
            gap=0.01,
        )
    )
    page = await open_room("many")
    await page.prompt("Weather in Paris?")
    turn = page.turn()
    await expect(turn).to_have_attribute("data-status", "completed")
    choices = turn.locator(".choice")
    await expect(choices).to_have_count(2)
    await expect(turn.get_by_role("heading", name="Choice 2")).to_be_visible()
    await expect(page.answer(choice=0)).to_have_text("Let me check.")
    await expect(page.answer(choice=1)).to_have_text("Second answer")
    reasoning = turn.locator('.choice[data-index="0"] details.reasoning')
    await expect(reasoning).not_to_have_attribute("open", "")
    await expect(reasoning.locator(".reasoning-text")).to_be_hidden()
    await reasoning.locator("summary").click()
    await expect(reasoning.locator(".reasoning-text")).to_have_text(
        "Think of the weather. Then call a tool."
    )
    call = turn.locator(".tool-call")
    await expect(call.locator(".tool-name")).to_have_text("get_weather")
    await expect(call.locator(".tool-id")).to_have_text("call_1")
    assert await call.locator(".tool-args").text_content() == '{\n  "city": "Paris"\n}'
    await expect(turn.locator('.choice[data-index="0"] .badge')).to_have_text("tool calls")
    await expect(turn.locator('.choice[data-index="1"] .badge')).to_have_text("length limit")
    await expect(turn.locator(".usage")).to_have_text("7 prompt + 9 completion = 16 tokens")
    assert page.unexpected_problems() == []


async def test_failed_and_truncated_turns_show_why(
    open_room: OpenRoom, upstream: FakeUpstream
) -> None:
    """An upstream HTTP error shows a failed badge with its message; a cut stream, truncated."""
    error = {"error": {"message": "the model is on fire", "type": "boom"}}
    upstream.always(Script(status=500, error_body=error))
    page = await open_room("fail")
    await page.prompt("Try")
    turn = page.turn()
    await expect(turn.locator('.badge[data-kind="failed"]')).to_have_text("failed")
    await expect(turn.locator(".turn-error")).to_contain_text("the model is on fire")
    upstream.always(Script(chunks=[chunk("Half an ans"), chunk("wer")], reset=True))
    await expect(page.page.get_by_role("button", name="Send")).to_be_enabled()
    await page.prompt("Try again")
    await expect(page.turn(1).locator('.badge[data-kind="truncated"]')).to_have_text("truncated")
    await expect(page.answer(turn=1)).to_have_text("Half an answer")
    await expect(page.turn(0).locator(".turn-error")).to_be_visible()
    assert page.unexpected_problems() == []
