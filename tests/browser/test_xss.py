"""Model output is untrusted: HTML in it shows as text, creates no element and runs nothing."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.integration.fake_upstream import FakeUpstream, Script, chunk, text_stream

from .conftest import OpenRoom

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

IMG = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "<script>window.__pwned=2</script>"
# Split so that no single chunk holds a whole tag.
PIECES = [
    "Look: <im",
    "g src=x oner",
    'ror="window.__pwned=1">',
    " and <scr",
    "ipt>window.__pwned=2</scr",
    "ipt> and a [link](javascript:window.__pwned=3)",
    "\n\n<svg onload=window.__pwned=4>",
]


async def test_html_in_the_answer_renders_as_text_and_runs_nothing(
    open_room: OpenRoom, upstream: FakeUpstream
) -> None:
    """<img onerror>, <script>, javascript: links and <svg onload> stay text; nothing runs."""
    upstream.always(Script(chunks=text_stream(PIECES), gap=0.02))
    page = await open_room("xss")
    await page.prompt(f"Echo {IMG} {SCRIPT}")
    await expect(page.turn()).to_have_attribute("data-status", "completed")
    answer = page.answer()
    await expect(answer).to_contain_text(IMG)
    await expect(answer).to_contain_text(SCRIPT)
    await expect(answer).to_contain_text("<svg onload=window.__pwned=4>")
    await expect(page.turn().locator(".prompt-text")).to_have_text(f"Echo {IMG} {SCRIPT}")
    assert await answer.locator("img, script, svg, iframe, [onerror], [onload]").count() == 0
    assert await page.page.locator("img").count() == 0
    assert await page.page.locator("body script").count() == 0
    link = answer.get_by_text("link")
    assert await link.get_attribute("href") is None
    await link.click()
    assert await page.page.evaluate("typeof window.__pwned") == "undefined"
    assert page.unexpected_problems() == []


async def test_tool_calls_and_reasoning_with_html_stay_text(
    open_room: OpenRoom, upstream: FakeUpstream
) -> None:
    """HTML in reasoning, tool names and tool arguments is shown as text too."""
    upstream.always(
        Script(
            chunks=[
                chunk(reasoning_content=IMG),
                chunk(
                    tool_calls=[
                        {
                            "index": 0,
                            "id": "call_x",
                            "type": "function",
                            "function": {"name": SCRIPT, "arguments": IMG},
                        }
                    ]
                ),
                chunk(finish="tool_calls"),
                "data: [DONE]\n\n",
            ]
        )
    )
    page = await open_room("xss-tools")
    await page.prompt("Tools")
    turn = page.turn()
    await expect(turn).to_have_attribute("data-status", "completed")
    await expect(turn.locator(".tool-name")).to_have_text(SCRIPT)
    await expect(turn.locator(".tool-args")).to_have_text(IMG)
    await turn.locator("details.reasoning summary").click()
    await expect(turn.locator(".reasoning-text")).to_have_text(IMG)
    assert await turn.locator("img, script").count() == 0
    assert await page.page.evaluate("typeof window.__pwned") == "undefined"
    assert page.unexpected_problems() == []
