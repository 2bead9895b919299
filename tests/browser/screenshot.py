"""Write docs/screenshot.png: a room page mid-stream, in Debian's Chromium at 1280x800.

Run with ``.venv/bin/python -m tests.browser.screenshot [PATH] [--dark]``. The answer comes from the
tests' fake upstream (so the picture is the same every time), held still mid-answer.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Literal

from playwright.async_api import async_playwright, expect

from tests.integration.fake_upstream import FakeUpstream, Script, chunk, text_stream

from .harness import launch_chromium, start_server

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"

FIRST_PROMPT = "In one sentence: what does fanout do?"
FIRST_ANSWER = (
    "It reads **one** upstream chat-completions stream per prompt and broadcasts its deltas "
    "live to every viewer of the room, so the model is paid once, not once per viewer."
)

SECOND_PROMPT = "How does a late joiner catch up? Show a tiny client."
REASONING = "The snapshot carries the text so far; then live deltas continue from its seq."
SECOND_ANSWER = """### Catching up

A viewer who joins mid-answer never misses a token:

1. The `welcome` frame names the room's **epoch** and current `seq`.
2. A `snapshot` follows with every turn, including the text streamed *so far*.
3. Live `delta` events continue from the next seq, so nothing is shown twice.

```python
async with session.ws_connect(url) as ws:
    async for msg in ws:
        frame = msg.json()
        if frame["type"] == "delta":
            print(frame["choices"][0].get("content", ""), end="")
```

Every viewer runs the same loop; the upstream is asked only once.
"""
HOLD_AT = "frame = msg.json()"


def pieces(text: str) -> list[str]:
    """Split text into small, word-sized stream pieces."""
    return re.findall(r"\S+\s*|\s+", text)


def answer_for(body: dict[str, object]) -> Script:
    """The fake upstream's answer to each of the two prompts."""
    messages = body["messages"]
    assert isinstance(messages, list)
    if messages[-1]["content"] == FIRST_PROMPT:
        return Script(chunks=text_stream(pieces(FIRST_ANSWER)), gap=0.005)
    stream = text_stream(pieces(SECOND_ANSWER))
    reasoning = [chunk(reasoning_content=p) for p in pieces(REASONING)]
    return Script(chunks=[stream[0], *reasoning, *stream[1:]], gap=0.04)


async def main(out: Path, scheme: Literal["light", "dark"] = "light") -> None:
    """Start the fake upstream and a server, prompt twice, and photograph the second answer."""
    upstream = FakeUpstream()
    await upstream.start()
    upstream.script_for = answer_for
    server = await start_server(upstream.base_url)
    try:
        async with async_playwright() as pw:
            browser = await launch_chromium(pw)
            url = str(server.make_url("/rooms/design-review"))
            context = await browser.new_context(
                viewport={"width": 1280, "height": 800}, color_scheme=scheme
            )
            other = await browser.new_context()
            page = await context.new_page()
            await page.goto(url)
            await (await other.new_page()).goto(url)
            await expect(page.locator("#viewers")).to_have_text("2 viewers")
            box = page.get_by_label("Prompt", exact=True)
            await box.fill(FIRST_PROMPT)
            await box.press("Enter")
            await expect(page.locator(".turn").last).to_have_attribute("data-status", "completed")
            await box.fill(SECOND_PROMPT)
            await box.press("Enter")
            answer = page.locator(".turn").last.locator(".content")
            await expect(answer).to_contain_text(HOLD_AT, timeout=20_000)
            upstream.release.clear()  # hold the stream still mid-answer
            await box.fill("Can the viewers prompt too?")
            await box.blur()
            await page.evaluate(
                "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"
            )
            await page.screenshot(path=str(out))
            upstream.release.set()
            await context.close()
            await other.close()
            await browser.close()
    finally:
        await server.close()
        await upstream.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    paths = [Path(a) for a in sys.argv[1:] if not a.startswith("--")]
    asyncio.run(main(paths[0] if paths else OUT, "dark" if "--dark" in sys.argv else "light"))
