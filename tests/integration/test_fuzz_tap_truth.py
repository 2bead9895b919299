"""The tap tells the truth about whatever a scripted upstream does (PROTOCOL.md, "Tap").

Whatever ends the room's turn ends the caller's answer the same way: a streamed answer that did
not complete ends with an error data line (nothing after it), a whole one is an error status.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from .fuzz_rig import Rig, assert_error_json, fuzz
from .fuzz_strategies import UpstreamScript, upstream_scripts
from .test_fuzz_entry_points import UPSTREAM_EXAMPLES, _frames_until_turn_end, _ws_texts


def _data_lines(text: str) -> list[str]:
    return [ln[5:].strip() for ln in text.splitlines() if ln.startswith("data:")]


def test_tap_over_scripted_upstream() -> None:
    """The tap tells the truth about whatever the upstream does, and the room goes on."""
    with Rig("tapup") as rig:

        @fuzz
        @given(script=upstream_scripts(), stream=st.booleans())
        @example(script=UPSTREAM_EXAMPLES[2], stream=False)
        @example(script=UPSTREAM_EXAMPLES[2], stream=True)
        @example(script=UPSTREAM_EXAMPLES[0], stream=True)
        @example(script=UPSTREAM_EXAMPLES[3], stream=True)
        def one(script: UpstreamScript, stream: bool) -> None:
            room = rig.new_room()
            content = f"fuzz tap upstream {room}"
            rig.upstream.scripts[content] = script
            request = {"messages": [{"role": "user", "content": content}], "stream": stream}

            async def step() -> None:
                ws = await rig.http().ws_connect(rig.base / "api/rooms" / room / "ws")
                async with ws:
                    assert (await ws.receive_json())["type"] == "welcome"
                    assert (await ws.receive_json())["type"] == "snapshot"
                    async with rig.http().post(
                        rig.base / "v1/chat/completions", json=request, headers={"X-Room": room}
                    ) as resp:
                        status, text = resp.status, (await resp.read()).decode("utf-8", "replace")
                    try:
                        async with asyncio.timeout(3):
                            end: dict[str, Any] | None = await _frames_until_turn_end(_ws_texts(ws))
                    except TimeoutError:
                        end = None
                where = f"tap {status} {text[:300]!r}; room {end}"
                if status == 500 and script.status != 500:
                    raise AssertionError(f"an internal error: {where}")
                if status >= 500:
                    assert status in (502, script.status), where
                if end is None or end["status"] != "completed":
                    if status >= 400 and status == script.status:
                        # The upstream's own error JSON, passed on (PROTOCOL.md, "Defaults").
                        assert isinstance(json.loads(text).get("error"), dict), where
                    elif status >= 400:
                        assert_error_json(status, text)
                    else:
                        assert stream, f"a non-streaming 200 for an unfinished turn: {where}"
                        data = [d for d in _data_lines(text) if d != "[DONE]"]
                        assert data, f"an empty streaming 200: {where}"
                        assert '"error"' in data[-1], (
                            f"the stream does not end in an error: {where}"
                        )
                elif stream:
                    assert status == 200, where
                    assert _data_lines(text)[-1:] == ["[DONE]"], where
                else:
                    assert status == 200, where
                    assert json.loads(text)["choices"], where
                await rig.healthy(room)

            try:
                rig.example(step)
            finally:
                rig.upstream.scripts.pop(content, None)

        one()
        rig.final_check()
