"""A client that sends correctly signed Slack requests (slash commands, events) into an app.

Each request is signed with Slack's v0 scheme: ``v0=`` and the hex HMAC-SHA256 of
``v0:<timestamp>:<raw body>`` under the app's signing secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from relay_plugin.tools.simulator import SlackSimulator


def slack_signature(signing_secret: str, timestamp: int | str, body: bytes) -> str:
    """Return the ``X-Slack-Signature`` value for a raw body sent at ``timestamp``."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return f"v0={digest}"


def mention_text(bot_user_id: str, rest: str) -> str:
    """Return message text that mentions the bot the way Slack encodes it."""
    return f"<@{bot_user_id}> {rest}"


@dataclass(frozen=True)
class HttpResult:
    """Status, headers and body text of the app's HTTP response."""

    status: int
    text: str
    headers: dict[str, str]

    def json(self) -> Any:
        """Decode the body as JSON."""
        return json.loads(self.text)


class SlackPayloads:
    """Builds what Slack sends to an app: slash command fields and Events API envelopes.

    Subclasses deliver them over one transport: SignedSlackClient over HTTP, and
    ``socket_client.SocketModeSlackClient`` over Socket Mode.
    """

    def __init__(self, simulator: SlackSimulator, *, api_app_id: str = "A0RELAY") -> None:
        self.simulator = simulator
        self.api_app_id = api_app_id

    def command_fields(
        self, text: str, *, channel: str = "C0001", user: str = "U0001", command: str = "/relay"
    ) -> dict[str, str]:
        """Return the fields of a slash command typed by ``user``, with a fresh response_url."""
        sim = self.simulator
        return {
            "token": "XXXXdeprecatedXXXX",
            "team_id": sim.team_id,
            "team_domain": "example",
            "channel_id": channel,
            "channel_name": "directmessage" if channel.startswith("D") else channel.lower(),
            "user_id": user,
            "user_name": sim.user_name(user),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": sim.new_response_url(channel=channel, user=user),
            "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**10}.{uuid.uuid4().hex}",
        }

    def mention_event(
        self,
        text: str,
        *,
        channel: str = "C0001",
        user: str = "U0001",
        thread_ts: str | None = None,
        ts: str | None = None,
        bot_id: str | None = None,
    ) -> dict[str, Any]:
        """Store ``text`` as a message by ``user``, unless ``ts`` names one; return its ``app_mention``."""
        sim = self.simulator
        message = sim.find(channel, ts) if ts else None
        if message is None:
            message = sim.add_message(channel, text, user, thread_ts, ts=ts or "")
        event: dict[str, Any] = {
            "type": "app_mention",
            "client_msg_id": str(uuid.uuid4()),
            "user": user,
            "team": sim.team_id,
            "channel": channel,
            "ts": message.ts,
            "event_ts": message.ts,
            "text": text,
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
            root = sim.find(channel, thread_ts)
            if root is not None:
                event["parent_user_id"] = root.user
        if bot_id:
            event["bot_id"] = bot_id
            event["bot_profile"] = {"id": bot_id, "name": bot_id.lower(), "team_id": sim.team_id}
        return event

    def envelope(self, event: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
        """Wrap an event as the Events API delivers it to this workspace's bot."""
        team_id = self.simulator.team_id
        return {
            "token": "XXXXdeprecatedXXXX",
            "team_id": team_id,
            "enterprise_id": None,
            "context_team_id": team_id,
            "context_enterprise_id": None,
            "api_app_id": self.api_app_id,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": team_id,
                    "user_id": self.simulator.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{uuid.uuid4().hex}",
            "event": event,
        }


class SignedSlackClient(SlackPayloads):
    """Sends what Slack would send to an app, and records it in the simulator as Slack shows it."""

    def __init__(
        self,
        app_url: str,
        signing_secret: str,
        simulator: SlackSimulator,
        *,
        api_app_id: str = "A0RELAY",
    ) -> None:
        super().__init__(simulator, api_app_id=api_app_id)
        self.app_url = app_url
        self.signing_secret = signing_secret

    async def post(
        self,
        body: bytes,
        content_type: str,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpResult:
        """POST a raw body, signed unless ``signature`` replaces the right value."""
        sent_at = int(time.time()) if timestamp is None else timestamp
        all_headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(sent_at),
            "X-Slack-Signature": signature or slack_signature(self.signing_secret, sent_at, body),
            **(headers or {}),
        }
        # A session per request keeps the client free of close() duties; tests send few requests.
        async with aiohttp.ClientSession() as session:
            async with session.post(self.app_url, data=body, headers=all_headers) as response:
                text = await response.text()
                return HttpResult(response.status, text, dict(response.headers))

    async def command(
        self, text: str, *, channel: str = "C0001", user: str = "U0001", command: str = "/relay"
    ) -> HttpResult:
        """Send a slash command; a 200 response with a body is shown as the command's ack."""
        sim = self.simulator
        fields = self.command_fields(text, channel=channel, user=user, command=command)
        sent_ts = sim.next_ts()
        result = await self.post(urlencode(fields).encode(), "application/x-www-form-urlencoded")
        if result.status == 200 and result.text.strip():
            payload = _ack_payload(result)
            if payload.get("text") or payload.get("blocks"):
                sim.show_command_ack(channel, user, payload, ts=sent_ts)
        return result

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
        """Post ``text`` as ``user``, deliver its ``app_mention`` event, return status and envelope.

        ``text`` is the full Slack text (see mention_text). Give ``ts`` and ``event_id`` of an
        earlier call with ``retry_num`` to redeliver it as Slack's retries do.
        """
        event = self.mention_event(
            text, channel=channel, user=user, thread_ts=thread_ts, ts=ts, bot_id=bot_id
        )
        envelope = self.envelope(event, event_id=event_id)
        result = await self._deliver(envelope, retry_num=retry_num)
        return result.status, envelope

    async def send_event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        signature: str | None = None,
        timestamp: int | None = None,
    ) -> int:
        """Deliver any event in an ``event_callback`` envelope; return the HTTP status."""
        envelope = self.envelope(event, event_id=event_id)
        result = await self._deliver(
            envelope,
            retry_num=retry_num,
            retry_reason=retry_reason,
            signature=signature,
            timestamp=timestamp,
        )
        return result.status

    async def _deliver(
        self,
        envelope: dict[str, Any],
        *,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        signature: str | None = None,
        timestamp: int | None = None,
    ) -> HttpResult:
        headers = {}
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        body = json.dumps(envelope).encode()
        return await self.post(
            body, "application/json", timestamp=timestamp, signature=signature, headers=headers
        )


def _ack_payload(result: HttpResult) -> dict[str, Any]:
    """Return the message Slack shows for an ack body: JSON as given, plain text as its text."""
    if result.headers.get("Content-Type", "").startswith("application/json"):
        payload = result.json()
        if isinstance(payload, dict):
            return payload
    return {"text": result.text}
