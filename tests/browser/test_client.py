"""fanout-client.js on its own, against a scripted WebSocket: continuity, resume, close codes."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Page

from .conftest import OpenRoom

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

# A WebSocket stand-in that records URLs and sent frames; a scenario (the body of an async
# function with `client`, `sockets`, `until`, `states` and `closed` in scope) pushes frames
# and closes. The page's CSP forbids eval, so the scenario is spliced into the source here.
HARNESS = """
async () => {
  const { FanoutClient } = await import('/static/fanout-client.js');
  class FakeSocket {
    static all = [];
    constructor(url) {
      this.url = url; this.sent = []; this.readyState = 1; FakeSocket.all.push(this);
    }
    send(data) { this.sent.push(JSON.parse(data)); }
    close() { this.readyState = 3; }
    push(frame) { this.onmessage({ data: JSON.stringify(frame) }); }
    drop(code) { this.readyState = 3; this.onclose({ code, reason: '' }); }
  }
  const sockets = FakeSocket.all;
  const until = async (test) => {
    for (let i = 0; i < 200 && !test(); i += 1) await new Promise((r) => setTimeout(r, 5));
    if (!test()) throw new Error('timed out');
  };
  const client = new FanoutClient('r1', {
    url: 'ws://example.invalid/api/rooms/r1/ws', WebSocket: FakeSocket,
    minDelayMs: 4, maxDelayMs: 16, random: () => 0.5,
  });
  const states = [];
  client.on('state', ({ state }) => states.push(state));
  const closed = [];
  client.on('closed', (why) => closed.push(why));
  client.start();
  try {
    SCENARIO
  } finally {
    client.close();
  }
}
"""

TURN = {
    "id": "t1",
    "status": "streaming",
    "prompt": "p",
    "model": "m",
    "started_at": 1.0,
    "ended_at": None,
    "choices": [
        {
            "index": 0,
            "content": "ab",
            "reasoning": "",
            "refusal": "",
            "tool_calls": [],
            "finish_reason": None,
        }
    ],
    "usage": None,
    "error": None,
}


async def run(page: Page, scenario: str, **values: Any) -> Any:
    """Run a scenario (statements ending in a return) in the page and return its result.

    ``$name`` in the scenario is replaced by ``values[name]`` as JSON.
    """
    for name, value in values.items():
        scenario = scenario.replace(f"${name}", json.dumps(value))
    return await page.evaluate(HARNESS.replace("SCENARIO", scenario))


@pytest_asyncio.fixture(loop_scope="session")
async def page(open_room: OpenRoom) -> Page:
    """A page on the server's origin, to import the module from."""
    room = await open_room("", path="/")
    return room.page


async def test_gap_resumes_with_epoch_and_since_and_keeps_text_once(page: Page) -> None:
    """A seq gap reconnects with epoch/since; the replay (merged) completes the text once."""
    result = await run(
        page,
        """
          const a = sockets[0];
          a.push({type: 'welcome', room: 'r1', epoch: 'E', seq: 2, role: 'publisher',
                  recovered: false, viewers: 1});
          a.push({type: 'snapshot', room: 'r1', epoch: 'E', seq: 2, turns: [$turn]});
          a.push({type: 'delta', seq: 3, turn: 't1', choices: [{index: 0, content: 'c'}]});
          a.push({type: 'delta', seq: 5, turn: 't1', choices: [{index: 0, content: 'X'}]});
          await until(() => sockets.length === 2);
          const b = sockets[1];
          b.push({type: 'welcome', room: 'r1', epoch: 'E', seq: 5, role: 'publisher',
                  recovered: true, viewers: 1});
          b.push({type: 'delta', seq: 5, first_seq: 4, turn: 't1',
                  choices: [{index: 0, content: 'de', tool_calls: [
                    {index: 0, id: 'call_1', name: 'f', arguments: '{"a"'}]}]});
          b.push({type: 'delta', seq: 5, turn: 't1', choices: [{index: 0, content: 'de'}]});
          b.push({type: 'delta', seq: 6, turn: 't1', choices: [{index: 0, tool_calls: [
                    {index: 0, id: 'call_2', name: 'g', arguments: ':1}'}]}]});
          b.push({type: 'turn.end', seq: 7, turn: 't1', status: 'completed',
                  choices: [{index: 0, finish_reason: 'tool_calls'}],
                  usage: {prompt_tokens: 1, completion_tokens: 2, total_tokens: 3}, error: null});
          const turn = client.turns.get('t1');
          return {urls: sockets.map((s) => s.url), text: turn.choices[0].content,
                  call: turn.choices[0].tool_calls[0], status: turn.status,
                  finish: turn.choices[0].finish_reason, seq: client.seq, stats: client.stats};
        """,
        turn=TURN,
    )
    assert result["urls"][0] == "ws://example.invalid/api/rooms/r1/ws"
    assert result["urls"][1] == "ws://example.invalid/api/rooms/r1/ws?epoch=E&since=3"
    assert result["text"] == "abcde"
    assert result["call"] == {"index": 0, "id": "call_1", "name": "f", "arguments": '{"a":1}'}
    assert result["status"] == "completed"
    assert result["finish"] == "tool_calls"
    assert result["seq"] == 7
    assert result["stats"]["gaps"] == 1
    assert result["stats"]["duplicates"] == 1
    assert result["stats"]["recovered"] == 1


async def test_not_recovered_means_a_fresh_snapshot_replaces_the_state(page: Page) -> None:
    """After a drop the server cannot resume: the new snapshot replaces every turn."""
    result = await run(
        page,
        """
          const a = sockets[0];
          a.push({type: 'welcome', room: 'r1', epoch: 'E', seq: 2, role: 'viewer',
                  recovered: false, viewers: 3});
          a.push({type: 'snapshot', room: 'r1', epoch: 'E', seq: 2, turns: [$turn]});
          a.drop(1006);
          await until(() => sockets.length === 2);
          const b = sockets[1];
          b.push({type: 'welcome', room: 'r1', epoch: 'F', seq: 9, role: 'viewer',
                  recovered: false, viewers: 2});
          b.push({type: 'snapshot', room: 'r1', epoch: 'F', seq: 9, turns: []});
          b.push({type: 'presence', viewers: 4});
          return {url: b.url, turns: client.turnList().length, epoch: client.epoch,
                  seq: client.seq, role: client.role, viewers: client.viewers,
                  states: [...states]};
        """,
        turn=TURN,
    )
    assert result["url"].endswith("?epoch=E&since=2")
    assert result["turns"] == 0
    assert result["epoch"] == "F"
    assert result["seq"] == 9
    assert result["role"] == "viewer"
    assert result["viewers"] == 4
    assert result["states"] == ["connecting", "live", "reconnecting", "live"]


@pytest.mark.parametrize("code", [1001, 1011, 1013, 4000, 4001, 1006])
async def test_retryable_close_codes_reconnect_with_growing_backoff(page: Page, code: int) -> None:
    """Retryable closes reconnect; the delay doubles per failed attempt up to the cap."""
    result = await run(
        page,
        """
          const delays = [];
          client.on('state', (s) => { if (s.state === 'reconnecting') delays.push(s.delayMs); });
          for (let i = 0; i < 4; i += 1) {
            sockets[i].drop($code);
            await until(() => sockets.length === i + 2);
          }
          return {delays, connects: client.stats.connects, state: client.state};
        """,
        code=code,
    )
    # Equal jitter with random() = 0.5: three quarters of min(cap, 4 * 2**n).
    assert result["delays"] == [3, 6, 12, 12]
    assert result["connects"] == 5


@pytest.mark.parametrize("code", [1000, 4500, 4501, 4502, 4503])
async def test_final_close_codes_stop_and_say_why(page: Page, code: int) -> None:
    """1000 and 4500-4503 stop the client for good and report the reason."""
    result = await run(
        page,
        """
          sockets[0].drop($code);
          await new Promise((r) => setTimeout(r, 60));
          return {sockets: sockets.length, state: client.state, closed};
        """,
        code=code,
    )
    assert result["sockets"] == 1
    assert result["state"] == "closed"
    assert [c["code"] for c in result["closed"]] == [code]
    assert result["closed"][0]["reason"]


async def test_prompts_wait_for_the_connection_and_are_resent_until_acknowledged(
    page: Page,
) -> None:
    """A prompt made while offline goes out when live, again after a drop, then no more."""
    result = await run(
        page,
        """
          const id = client.prompt('hello', {id: 'p-1'});
          const a = sockets[0];
          const welcome = (s, seq, recovered) => s.push({type: 'welcome', room: 'r1',
            epoch: 'E', seq, role: 'publisher', recovered, viewers: 1});
          welcome(a, 0, false);
          a.push({type: 'snapshot', room: 'r1', epoch: 'E', seq: 0, turns: []});
          a.drop(1011);
          await until(() => sockets.length === 2);
          const b = sockets[1];
          welcome(b, 0, true);
          b.push({type: 'turn.start', seq: 1, turn: 't9', prompt: 'hello', model: 'm',
                  started_at: 2});
          b.drop(1001);
          await until(() => sockets.length === 3);
          welcome(sockets[2], 1, true);
          return {id, sent: sockets.map((s) => s.sent)};
        """,
    )
    frame = {"type": "prompt", "content": "hello", "id": "p-1"}
    assert result["id"] == "p-1"
    assert result["sent"] == [[frame], [frame], []]
