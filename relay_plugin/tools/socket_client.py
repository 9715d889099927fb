"""A client that sends Slack's commands and events to an app over the simulator's Socket Mode side.

Its methods have the names, arguments and results of SignedSlackClient's, so one test can run
over either transport. Each result stands for the HTTP response to the same delivery. Once the
app acknowledges the envelope, the status is 200 and the body is the ack payload as JSON. When
no ack arrives in time, the status is 404 and the body is empty. Bolt's HTTP adapter answers 404
when no listener acknowledges a request, and over Socket Mode Bolt then sends no ack.
"""

from __future__ import annotations

import json
from typing import Any

from relay_plugin.tools.simulator import SlackSimulator
from relay_plugin.tools.slack_client import HttpResult, SlackPayloads
from relay_plugin.tools.socket_mode import Envelope

NOT_ACKED = HttpResult(404, "", {})


class SocketModeSlackClient(SlackPayloads):
    """Pushes slash commands and events as Socket Mode envelopes and waits for the app's acks."""

    def __init__(
        self,
        simulator: SlackSimulator,
        *,
        api_app_id: str = "A0RELAY",
        ack_timeout_s: float | None = None,
    ) -> None:
        super().__init__(simulator, api_app_id=api_app_id)
        self.ack_timeout_s = ack_timeout_s
        self.sent: list[Envelope] = []

    async def command(
        self, text: str, *, channel: str = "C0001", user: str = "U0001", command: str = "/relay"
    ) -> HttpResult:
        """Send a slash command. The simulator shows a timely ack payload as the ephemeral reply."""
        sim = self.simulator
        fields = self.command_fields(text, channel=channel, user=user, command=command)
        envelope = await sim.socket_mode.push_command(fields, sent_ts=sim.next_ts())
        return await self._result(envelope)

    async def mention(
        self,
        text: str,
        *,
        channel: str = "C0001",
        user: str = "U0001",
        thread_ts: str | None = None,
        ts: str | None = None,
        event_id: str | None = None,
        retry_num: int | None = None,
        bot_id: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Post ``text`` as ``user``, push its ``app_mention`` event, return status and envelope.

        Give ``ts`` and ``event_id`` of an earlier call with ``retry_num`` to redeliver it with
        that ``retry_attempt``, as Slack does when an envelope was not acknowledged.
        """
        event = self.mention_event(
            text, channel=channel, user=user, thread_ts=thread_ts, ts=ts, bot_id=bot_id
        )
        body = self.envelope(event, event_id=event_id)
        result = await self._deliver(body, retry_num=retry_num)
        return result.status, body

    async def send_event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
    ) -> int:
        """Push any event in an ``event_callback`` body. Returns 200 when acked and 404 otherwise."""
        body = self.envelope(event, event_id=event_id)
        result = await self._deliver(body, retry_num=retry_num, retry_reason=retry_reason)
        return result.status

    async def _deliver(
        self, body: dict[str, Any], *, retry_num: int | None, retry_reason: str = "http_timeout"
    ) -> HttpResult:
        socket = self.simulator.socket_mode
        if retry_num is None:
            envelope = await socket.push_event(body)
        else:
            envelope = await socket.push_event(
                body, retry_attempt=retry_num, retry_reason=retry_reason
            )
        return await self._result(envelope)

    async def _result(self, envelope: Envelope) -> HttpResult:
        self.sent.append(envelope)
        try:
            await self.simulator.socket_mode.wait_for_ack(envelope, self.ack_timeout_s)
        except TimeoutError:
            return NOT_ACKED
        payload = envelope.ack_payload
        if payload is None:
            return HttpResult(200, "", {})
        return HttpResult(200, json.dumps(payload), {"Content-Type": "application/json"})
