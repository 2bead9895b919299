"""The WebSocket endpoint ``GET /api/rooms/{room}/ws`` (PROTOCOL.md, "WebSocket")."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSMessage, WSMsgType, web

from server.config import Config
from server.core.auth_rules import may_prompt
from server.core.codec import decode_client_frame
from server.core.codes import CloseCode, ErrorCode
from server.core.errors import ClientError
from server.core.messages import CancelRequest, ErrorFrame, Role
from server.core.refusals import RefusalCount
from server.core.text import MAX_SEQ_DIGITS, check_client_text, parse_seq
from server.core.types import parse_room_name
from server.core.wsframe import PING, FrameOnce
from server.http.admission import PromptAdmission, enter_room
from server.http.guards import client_address, guard
from server.http.heartbeat import Beating
from server.http.joining import attach, send_one
from server.http.keys import CONFIG, CONNECTIONS, HEARTBEAT, HUB, PROMPTS, ROOM_BUDGET, SOCKETS
from server.rooms.hub import Hub
from server.rooms.room import Room
from server.rooms.subscriber import Subscriber, connection_subscriber

log = logging.getLogger(__name__)

CLOSE_REASONS = {
    CloseCode.TOO_MANY_BAD_FRAMES: "too many bad frames",
    CloseCode.RATE_LIMITED: "rate limited",
}
CLOSE_WAIT_SECONDS = 5.0


class WebSocketSink(Beating):
    """Writes pre-encoded frames to an aiohttp WebSocket; the heartbeat's view of it too."""

    __slots__ = ("transport", "ws")

    def __init__(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport | None = None
    ) -> None:
        super().__init__()
        self.ws = ws
        self.transport = transport

    async def write(self, data: bytes) -> None:
        """Send one text frame of already encoded JSON."""
        await self.ws.send_frame(data, WSMsgType.TEXT)

    def write_now(self, data: bytes) -> None:
        """Write one text frame straight to the transport, framed once per event.

        For a subscriber that keeps up (nothing queued or buffered): no task wakes for it.
        Nothing is written once our close frame went out or the connection is going.
        """
        transport = self.transport
        if transport is not None and not transport.is_closing() and not self.ws.closed:
            transport.write(_FRAMES.frame(data))

    def ping(self) -> None:
        """Send a ping (the heartbeat's).

        Whole frames only ever reach the transport, so it cannot land inside another frame.
        """
        transport = self.transport
        if transport is not None and not transport.is_closing() and not self.ws.closed:
            transport.write(PING)

    def drop(self) -> None:
        """Drop a connection that answered nothing: its reader sees the end at once."""
        if self.transport is not None:
            self.transport.abort()

    async def close(self, code: CloseCode, reason: str) -> None:
        """Close with ``code``."""
        await self.ws.close(code=code, message=reason.encode())


_FRAMES = FrameOnce()  # every subscriber of an event gets the same frame bytes
_ENDS = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


def resume_point(query: dict[str, str]) -> tuple[str, int] | None:
    """``epoch``/``since`` of the URL, when both are given.

    Raises:
        ClientError: ``bad_request`` when ``since`` is not 1-18 ASCII digits, or either is not
            valid text.
    """
    epoch, since = query.get("epoch"), query.get("since")
    if epoch is None or since is None:
        return None
    check_client_text(epoch, "epoch")
    seq = parse_seq(since)
    if seq is None:
        raise ClientError(
            ErrorCode.BAD_REQUEST,
            f"'since' must be a non-negative integer of at most {MAX_SEQ_DIGITS} digits",
        )
    return epoch, seq


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """Join a room: welcome, snapshot or replay, then live events; read client frames.

    One coroutine for the connection's whole life: an idle viewer is this frame parked in
    ``ws.receive()``, so every coroutine more in that chain would cost memory per viewer.
    """
    config = request.app[CONFIG]
    hub = request.app[HUB]
    name = parse_room_name(request.match_info["room"])
    # Refused before the upgrade: another Host (400) and a bad Origin (403) by the
    # middleware, a missing or bad token (401/403), a bad resume point (400), a full server
    # (503), a principal past its room-creation budget (429).
    caller = guard(request, config, name, "view")
    resume = resume_point(dict(request.query))
    claims, role, who = caller.claims, caller.role, caller.principal
    enter_room(hub, request.app[ROOM_BUDGET], name, who)
    # No aiohttp heartbeat (a timer per connection, and its state on every response): the
    # instance's heartbeat wheel pings, and this reader answers pings itself.
    ws = web.WebSocketResponse(
        max_msg_size=config.limits.max_frame_bytes, compress=False, autoping=False
    )
    await ws.prepare(request)
    address = client_address(request)
    connections = request.app[CONNECTIONS]
    if not connections.acquire(address):
        await ws.close(
            code=CloseCode.LIMIT_REACHED, message=b"too many connections from this address"
        )
        return ws
    try:
        sink = WebSocketSink(ws, request.transport)
        sub = connection_subscriber(
            sink, config.limits, request.transport, write_now=sink.write_now
        )
        try:
            room = await hub.open(name)
            attach(hub, room, sub, resume, role)
        except ClientError as exc:
            await ws.close(
                code=exc.close_code or CloseCode.TRY_AGAIN_LATER, message=exc.message.encode()
            )
            return ws
        except Exception:
            log.exception("room %s: a join failed; closing 1011", name)
            await ws.close(code=CloseCode.INTERNAL_ERROR, message=b"internal error")
            return ws
        sub.start()
        expiry = None
        if claims is not None:
            # PROTOCOL.md: a live connection whose token expires is closed with 4500.
            delay = max(0.0, claims.exp - time.time())
            expiry = asyncio.get_running_loop().call_later(
                delay, sub.close, CloseCode.UNAUTHORIZED, "token expired"
            )
        sockets, heartbeat = request.app[SOCKETS], request.app[HEARTBEAT]
        sockets.add(ws)
        heartbeat.add(sink)
        reader = FrameReader(hub, room, sub, role, who, request.app[PROMPTS], config)
        try:
            while (msg := await ws.receive()).type not in _ENDS:
                sink.heard = True
                if not await reader.take(ws, msg):
                    break
        except Exception:
            # A fault while serving this connection closes it alone (1011).
            log.exception("room %s: serving a connection failed; closing 1011", name)
            sub.fail()
        finally:
            if expiry is not None:
                expiry.cancel()
            heartbeat.discard(sink)
            sockets.discard(ws)
            hub.leave(room, sub)
            # Let the writer deliver what is queued (an error frame) and the close code.
            await sub.stop(CLOSE_WAIT_SECONDS)
    finally:
        connections.release(address)
    return ws


class FrameReader:
    """Reads one connection's client frames and answers what cannot be honoured."""

    __slots__ = (
        "default_model",
        "hub",
        "max_prompt_chars",
        "principal",
        "prompts",
        "refusals",
        "role",
        "room",
        "sub",
    )

    def __init__(
        self,
        hub: Hub,
        room: Room,
        sub: Subscriber,
        role: Role,
        principal: str,
        prompts: PromptAdmission,
        config: Config,
    ) -> None:
        self.hub, self.room, self.sub, self.role = hub, room, sub, role
        self.principal, self.prompts = principal, prompts
        self.max_prompt_chars = config.limits.max_prompt_chars
        self.default_model = config.upstream.model
        self.refusals = RefusalCount(
            config.limits.max_bad_frames, config.limits.max_rate_limited_frames
        )

    async def take(self, ws: web.WebSocketResponse, msg: WSMessage) -> bool:
        """Handle one client frame; False once the connection is being closed for it."""
        if msg.type == WSMsgType.TEXT:
            return await self._frame(msg.data)
        if msg.type == WSMsgType.PING:
            await ws.pong(msg.data)  # RFC 6455, section 5.5.3 (autoping is off)
        elif msg.type == WSMsgType.BINARY:
            log.info("room %s: binary frame, closing 1003", self.room.state.name)
            await ws.close(code=CloseCode.UNSUPPORTED_DATA, message=b"text frames only")
            return False
        return True  # a pong: the heartbeat heard it

    async def _frame(self, text: str) -> bool:
        """Handle one text frame; False once the connection is being closed."""
        try:
            frame = decode_client_frame(text, max_prompt_chars=self.max_prompt_chars)
        except ClientError as exc:
            _refuse(self.sub, self.room, exc)
            return self._go_on(self.refusals.bad_frame())
        try:
            may_prompt(self.role)
            if isinstance(frame, CancelRequest):
                await self.hub.cancel(self.room, frame.turn)
            else:
                try:
                    await self.prompts.submit(
                        self.hub,
                        self.room,
                        frame,
                        self.principal,
                        default_model=self.default_model,
                    )
                except ClientError as exc:
                    if exc.code != ErrorCode.RATE_LIMITED:
                        self.refusals.prompt_accepted()  # past the budget: the streak is over
                    raise
                self.refusals.prompt_accepted()
        except ClientError as exc:
            exc.ref = exc.ref or frame.id
            _refuse(self.sub, self.room, exc)
            return self._go_on(self.refusals.refused(exc.code))
        return True

    def _go_on(self, close_code: CloseCode | None) -> bool:
        if close_code is None:
            return True
        log.info("room %s: closing %d after refused frames", self.room.state.name, close_code)
        self.sub.close(close_code, CLOSE_REASONS[close_code])
        return False


def _refuse(sub: Subscriber, room: Room, exc: ClientError) -> None:
    log.info("room %s: frame refused: %s (%s)", room.state.name, exc.code, exc.message)
    send_one(sub, ErrorFrame(exc.code, exc.message, exc.temporary, exc.retry_after_ms, exc.ref))
