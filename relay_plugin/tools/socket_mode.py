"""The Socket Mode side of the Slack simulator.

An app calls ``apps.connections.open`` with its app-level token (``xapp-...``) in the
``Authorization: Bearer`` header and receives a ``ws://`` URL with a one-time ticket. The simulator
accepts that websocket, sends ``hello``, pushes envelopes (``events_api``, ``slash_commands``,
``interactive``) and checks and records every acknowledgement. An envelope counts as failed when
no ack arrives within 3 seconds, Slack's limit for acknowledging events and commands over HTTP.
A slash command's ack may carry a ``payload``, which Slack shows to the user as the ephemeral
reply, so the simulator stores it as one. Tests can also close the websocket or send a
``disconnect`` message, as Slack does before it refreshes a connection.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMsgType, web

if TYPE_CHECKING:
    from relay_plugin.tools.simulator import SlackSimulator

__all__ = ["ACK_TIMEOUT_S", "Envelope", "SocketConnection", "SocketModeServer"]

logger = logging.getLogger(__name__)

ACK_TIMEOUT_S = 3.0
CONNECT_WAIT_S = 5.0
LINK_PATH = "/link/"

Body = dict[str, Any]


@dataclass
class SocketConnection:
    """One websocket that the app opened with a ticket from ``apps.connections.open``."""

    number: int
    ws: web.WebSocketResponse
    ready: bool = False
    close_code: int | None = None

    @property
    def open(self) -> bool:
        """Whether envelopes can still be sent on this connection."""
        return self.ready and not self.ws.closed


@dataclass
class Envelope:
    """One envelope pushed to the app, and its acknowledgement once that arrives."""

    envelope_id: str
    type: str
    payload: Body
    accepts_response_payload: bool
    connection: int
    sent_at: float
    ack: Body | None = None
    ack_delay_s: float | None = None
    # (channel, user, ts) where a slash command's ack payload is shown as an ephemeral message.
    show_ack_at: tuple[str, str, str] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def acked(self) -> bool:
        """Whether the app acknowledged this envelope, in time or late."""
        return self.ack is not None

    @property
    def ack_payload(self) -> Body | None:
        """The ``payload`` of the ack, or None when the ack had none or has not arrived."""
        payload = (self.ack or {}).get("payload")
        return payload if isinstance(payload, dict) else None


class SocketModeServer:
    """Connection URLs, websockets, envelopes and acks of one simulated Socket Mode app."""

    def __init__(
        self, sim: SlackSimulator, app_token: str, *, ack_timeout_s: float = ACK_TIMEOUT_S
    ) -> None:
        self.sim = sim
        self.app_token = app_token
        self.ack_timeout_s = ack_timeout_s
        self.urls_issued = 0
        self.connections: list[SocketConnection] = []
        self.envelopes: list[Envelope] = []
        self.problems: list[str] = []
        self._tickets: set[str] = set()
        self._numbers = itertools.count(1)

    def add_routes(self, app: web.Application) -> None:
        """Serve the websocket endpoint on ``app`` and close open websockets at its shutdown."""
        app.router.add_get(LINK_PATH, self._handle_link)
        app.on_shutdown.append(self._close_all)

    # apps.connections.open

    def open_connection(self, header_token: str) -> Body:
        """Implement ``apps.connections.open``, which returns a one-time websocket URL."""
        # Slack reads this method's token only from the Authorization header.
        if not header_token:
            return {"ok": False, "error": "not_authed"}
        if hmac.compare_digest(header_token.encode(), self.sim.bot_token.encode()):
            return {"ok": False, "error": "not_allowed_token_type"}
        if not hmac.compare_digest(header_token.encode(), self.app_token.encode()):
            return {"ok": False, "error": "invalid_auth"}
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        self.urls_issued += 1
        self.sim.notify()
        host_port = self.sim.base_url.removeprefix("http://")
        return {"ok": True, "url": f"ws://{host_port}{LINK_PATH}?ticket={ticket}&app_id={self.sim.app_id}"}

    # The websocket

    async def _handle_link(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            # NOTE: how Slack rejects an unknown or reused ticket is a guess.
            return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
        self._tickets.discard(ticket)

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        connection = SocketConnection(next(self._numbers), ws)
        self.connections.append(connection)
        # NOTE: the hello fields other than "type" are unverified. slack_sdk 3.48 reads only "type".
        await ws.send_json({
            "type": "hello",
            "num_connections": sum(1 for c in self.connections if not c.ws.closed),
            "debug_info": {"host": "applink-sim", "build_number": 1,
                           "approximate_connection_time": 18060},
            "connection_info": {"app_id": self.sim.app_id},
        })  # fmt: skip
        connection.ready = True
        logger.info("Socket Mode connection %d opened", connection.number)
        self.sim.notify()

        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._receive(connection, message.data)
                elif message.type == WSMsgType.BINARY:
                    self._problem(f"connection {connection.number}: binary frame ignored")
        finally:
            connection.close_code = ws.close_code
            logger.info("Socket Mode connection %d closed (code %s)", connection.number, ws.close_code)
            self.sim.notify()
        return ws

    def _receive(self, connection: SocketConnection, text: str) -> None:
        try:
            ack = json.loads(text)
        except ValueError:
            ack = None
        if not isinstance(ack, dict) or not isinstance(ack.get("envelope_id"), str):
            self._problem(f"connection {connection.number}: not an ack: {text[:200]!r}")
            return
        envelope = next((e for e in self.envelopes if e.envelope_id == ack["envelope_id"]), None)
        if envelope is None:
            self._problem(f"ack for unknown envelope {ack['envelope_id']!r}")
            return
        if envelope.acked:
            self._problem(f"envelope {envelope.envelope_id} acknowledged twice", envelope)
            return
        envelope.ack = ack
        envelope.ack_delay_s = asyncio.get_running_loop().time() - envelope.sent_at
        if "payload" in ack and not envelope.accepts_response_payload:
            self._problem(f"ack of {envelope.type} envelope {envelope.envelope_id} has a payload, "
                          "which Slack does not accept for this envelope", envelope)  # fmt: skip
        if envelope.ack_delay_s > self.ack_timeout_s:
            # Slack has given up by then: it shows the user an error instead of the ack payload.
            self._problem(f"envelope {envelope.envelope_id} acknowledged after "
                          f"{envelope.ack_delay_s:.2f} s, later than {self.ack_timeout_s:g} s",
                          envelope)  # fmt: skip
        else:
            self._show_ack(envelope)
        self.sim.notify()

    def _show_ack(self, envelope: Envelope) -> None:
        payload = envelope.ack_payload
        if envelope.show_ack_at is None or payload is None:
            return
        if payload.get("text") or payload.get("blocks"):
            channel, user, ts = envelope.show_ack_at
            self.sim.show_command_ack(channel, user, payload, ts=ts)

    def _problem(self, text: str, envelope: Envelope | None = None) -> None:
        logger.warning("Socket Mode: %s", text)
        self.problems.append(text)
        if envelope is not None:
            envelope.problems.append(text)
        self.sim.notify()

    # Test controls

    def current(self) -> SocketConnection | None:
        """Return the newest open connection, which receives the next envelope, or None."""
        return next((c for c in reversed(self.connections) if c.open), None)

    async def wait_connected(self, count: int = 1, timeout: float = CONNECT_WAIT_S) -> SocketConnection:
        """Wait until the app has opened ``count`` connections in all; return the newest open one."""

        def ready() -> bool:
            return len(self.connections) >= count and self.current() is not None

        await self.sim.wait_for(
            ready, timeout, description=f"Socket Mode connection {count} "
            f"({self.urls_issued} URLs issued, {len(self.connections)} connections opened)",
        )  # fmt: skip
        connection = self.current()
        assert connection is not None
        return connection

    async def push(
        self,
        envelope_type: str,
        payload: Body,
        *,
        accepts_response_payload: bool = False,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
        show_ack_at: tuple[str, str, str] | None = None,
    ) -> Envelope:
        """Send an envelope on the newest open connection, waiting briefly for one to open."""
        connection = await self.wait_connected(len(self.connections) or 1)
        envelope = Envelope(
            str(uuid.uuid4()), envelope_type, payload, accepts_response_payload,
            connection.number, asyncio.get_running_loop().time(), show_ack_at=show_ack_at,
        )  # fmt: skip
        message: Body = {
            "envelope_id": envelope.envelope_id,
            "type": envelope_type,
            "accepts_response_payload": accepts_response_payload,
            "payload": payload,
        }
        if retry_attempt is not None:
            message["retry_attempt"] = retry_attempt
            message["retry_reason"] = retry_reason or ""
        self.envelopes.append(envelope)
        await connection.ws.send_json(message)
        return envelope

    async def push_event(
        self, body: Body, *, retry_attempt: int = 0, retry_reason: str = ""
    ) -> Envelope:
        """Send an ``event_callback`` body as an ``events_api`` envelope."""
        return await self.push(
            "events_api", body, retry_attempt=retry_attempt, retry_reason=retry_reason
        )

    async def push_command(self, fields: Body, *, sent_ts: str = "") -> Envelope:
        """Send slash command fields. A timely ack payload is shown as the ephemeral reply.

        Pass a ``sent_ts`` taken when the command was typed, so that the ack sorts before the
        response_url posts that the app may send before its ack arrives.
        """
        target = (str(fields.get("channel_id", "")), str(fields.get("user_id", "")), sent_ts)
        return await self.push(
            "slash_commands", fields, accepts_response_payload=True, show_ack_at=target
        )

    async def push_interactive(self, payload: Body) -> Envelope:
        """Send a block action, shortcut or view payload as an ``interactive`` envelope."""
        accepts = payload.get("type") == "block_suggestion"
        return await self.push("interactive", payload, accepts_response_payload=accepts)

    async def wait_for_ack(self, envelope: Envelope, timeout: float | None = None) -> Envelope:
        """Wait for the app's ack of ``envelope``. Raises TimeoutError when none arrives in time."""
        limit = self.ack_timeout_s if timeout is None else timeout
        try:
            await self.sim.wait_for(lambda: envelope.acked, limit)
        except TimeoutError:
            raise TimeoutError(
                f"the app did not acknowledge {envelope.type} envelope {envelope.envelope_id} "
                f"within {limit:g} s (sent on connection {envelope.connection})"
            ) from None
        return envelope

    def unacked(self) -> list[Envelope]:
        """Return envelopes still unacknowledged after the ack timeout, which Slack counts as failed."""
        now = asyncio.get_running_loop().time()
        return [e for e in self.envelopes if not e.acked and now - e.sent_at > self.ack_timeout_s]

    async def drop(self) -> SocketConnection:
        """Close the newest open connection from the server side, as when Slack drops it."""
        connection = await self.wait_connected(len(self.connections) or 1)
        await connection.ws.close(code=WSCloseCode.GOING_AWAY, message=b"dropped by the simulator")
        return connection

    async def request_refresh(self, reason: str = "refresh_requested") -> SocketConnection:
        """Send ``disconnect`` on the newest open connection; the app should open a new one."""
        connection = await self.wait_connected(len(self.connections) or 1)
        await connection.ws.send_json(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-sim"}}
        )
        return connection

    async def _close_all(self, app: web.Application) -> None:
        for connection in self.connections:
            if not connection.ws.closed:
                await connection.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
