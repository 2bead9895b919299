"""Requests the HTTP parser itself refuses: a 400, and nothing in the log an attacker can flood."""

from __future__ import annotations

from hypothesis import example, given

from .fuzz_rig import Rig, fuzz, raw_exchange
from .fuzz_strategies import malformed_requests


def test_malformed_http_is_refused_quietly() -> None:
    """Requests the HTTP parser refuses get a 400 and leave no ERROR or traceback in the log."""
    with Rig("malformed") as rig:

        @fuzz
        @given(request=malformed_requests())
        @example(
            request=b"GET /api/rooms/{ROOM}/ws?since=\xc2\xb2 HTTP/1.1\r\n"
            b"Host: h\r\nConnection: close\r\n\r\n"
        )
        @example(
            request=b"GET /api/rooms/{ROOM}/events HTTP/1.1\r\n"
            b"Host: h\r\nLast-Event-ID: \x01\r\nConnection: close\r\n\r\n"
        )
        def one(request: bytes) -> None:
            room = rig.new_room()

            async def step() -> None:
                data = request.replace(b"{ROOM}", room.encode())
                status, raw = await raw_exchange(rig.port, [data], 0.0)
                assert status == 400, raw[:400]
                await rig.healthy(room)

            rig.example(step)

        one()
        rig.final_check()
