"""The driver side of the benchmark: a Slack simulator that timestamps answers, and signed requests.

Both run in the driver process, so a request's send time and its answer's arrival time come from
one clock (``time.perf_counter``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from relay_plugin.tools.simulator import PostedMessage, SlackSimulator
from relay_plugin.tools.slack_client import SignedSlackClient, mention_text, slack_signature
from relay_plugin.tools.slack_workspace import Body, message_text

BOT_TOKEN = "xoxb-bench"
SIGNING_SECRET = "bench-signing-secret"
ADMIN_USER = "U0001"
BOT_NAME = "echo"
# Every relayed text starts with "bench-relay" and the agent echoes it after its name, so this
# substring distinguishes an answer from working notes, failure lines and refusals.
ANSWER_MARK = f"{BOT_NAME}: bench-relay"
CLIENT_CONNECTIONS = 1_000
REQUEST_TIMEOUT_S = 30.0


def bench_users(count: int) -> dict[str, dict[str, Any]]:
    """Return simulator users: the admin U0001 and ``count`` members U1000, U1001, ..."""
    users: dict[str, dict[str, Any]] = {ADMIN_USER: {"name": "alice", "is_admin": True}}
    for index in range(count):
        users[f"U{1000 + index}"] = {"name": f"member{index}"}
    return users


class BenchSimulator(SlackSimulator):
    """SlackSimulator with indexed message lookups and a timestamp for each answered thread.

    The base class finds messages by a linear scan and keeps every API call, which is fine for
    tests but would make the driver slower with each of the thousands of relays of a run.
    """

    def __init__(self, *, users: int = 100) -> None:
        super().__init__(bot_token=BOT_TOKEN, users=bench_users(users))
        self.method_counts: Counter[str] = Counter()
        self.answered: dict[str, float] = {}  # thread ts -> perf_counter time of the answer
        self.first_post: dict[str, float] = {}  # thread ts -> time of the app's first post there
        self.other_posts: dict[str, str] = {}  # thread ts -> last non-answer text posted there
        self._index: dict[tuple[str, str], PostedMessage] = {}
        self._waiters: dict[str, asyncio.Future[float]] = {}
        self._count_waiters: list[tuple[int, asyncio.Future[None]]] = []

    def expect(self, thread_ts: str) -> asyncio.Future[float]:
        """Return a future that resolves to the perf_counter time of the thread's answer."""
        future = asyncio.get_running_loop().create_future()
        if thread_ts in self.answered:
            future.set_result(self.answered[thread_ts])
        else:
            self._waiters[thread_ts] = future
        return future

    async def wait_answered(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` threads have answers; return False when ``timeout`` passes."""
        if len(self.answered) >= count:
            return True
        future = asyncio.get_running_loop().create_future()
        self._count_waiters.append((count, future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        return True

    def working_notes(self) -> int:
        """Return how many chat.postMessage calls the simulator has handled."""
        return self.method_counts["chat.postMessage"]

    # Overrides of the simulator

    def store(self, message: PostedMessage) -> PostedMessage:
        self._index[(message.channel, message.ts)] = message
        return super().store(message)

    def remove(self, message: PostedMessage) -> None:
        self._index.pop((message.channel, message.ts), None)
        super().remove(message)

    def find(self, channel: str, ts: str) -> PostedMessage | None:
        return self._index.get((channel, ts))

    def post_message(self, params: Body) -> Body:
        reply = super().post_message(params)
        if reply.get("ok"):
            thread = str(params.get("thread_ts") or reply["ts"])
            self._observe(thread, params)
        return reply

    def update(self, params: Body) -> Body:
        reply = super().update(params)
        if reply.get("ok"):
            message = self.find(str(params.get("channel", "")), str(params.get("ts", "")))
            if message is not None:
                self._observe(message.thread_ts or message.ts, params)
        return reply

    def _record_call(self, request: web.Request, method: str, params: Body) -> None:
        self.method_counts[method] += 1

    def _observe(self, thread_ts: str, params: Body) -> None:
        now = time.perf_counter()
        self.first_post.setdefault(thread_ts, now)
        if not _is_answer(params):
            self.other_posts[thread_ts] = message_text(params)
            return
        if thread_ts in self.answered:
            return
        self.answered[thread_ts] = now
        waiter = self._waiters.pop(thread_ts, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(now)
        reached = [item for item in self._count_waiters if len(self.answered) >= item[0]]
        for item in reached:
            self._count_waiters.remove(item)
            if not item[1].done():
                item[1].set_result(None)


def _is_answer(params: Body) -> bool:
    if ANSWER_MARK in message_text(params):
        return True
    blocks = params.get("blocks")
    if isinstance(blocks, str):
        return ANSWER_MARK in blocks
    return ANSWER_MARK in json.dumps(blocks or [])


@dataclass(frozen=True, slots=True)
class Sent:
    """One signed request: its HTTP status, when it was sent and how long the response took."""

    status: int
    sent_at: float
    ack_s: float
    body: str
    thread_ts: str = ""


class SlackDriver:
    """Sends signed events and slash commands to one app over a shared connection pool."""

    def __init__(self, app_url: str, sim: BenchSimulator) -> None:
        self.events_url = f"{app_url}/slack/events"
        self.sim = sim
        self._envelopes = SignedSlackClient(self.events_url, SIGNING_SECRET, sim)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SlackDriver:
        connector = aiohttp.TCPConnector(limit=CLIENT_CONNECTIONS)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def mention(self, channel: str, user: str, number: int) -> Sent:
        """Mention the bot in a new thread with a numbered text; the thread ts is the message ts."""
        ts = self.sim.next_ts()
        text = mention_text(self.sim.bot_user_id, f"{BOT_NAME} bench-relay {number}")
        event = {
            "type": "app_mention", "client_msg_id": str(uuid.uuid4()), "user": user,
            "team": self.sim.team_id, "channel": channel, "ts": ts, "event_ts": ts, "text": text,
        }  # fmt: skip
        body = json.dumps(self._envelopes.envelope(event)).encode()
        return await self._post(body, "application/json", thread_ts=ts)

    async def command(self, text: str, channel: str, user: str = ADMIN_USER) -> Sent:
        """Send ``/relay text``; the ack is the HTTP response."""
        fields = {
            "token": "XXXXdeprecatedXXXX", "team_id": self.sim.team_id, "team_domain": "bench",
            "channel_id": channel, "channel_name": channel.lower(), "user_id": user,
            "user_name": self.sim.user_name(user), "command": "/relay", "text": text,
            "api_app_id": self.sim.app_id, "is_enterprise_install": "false",
            "response_url": self.sim.new_response_url(channel=channel, user=user),
            "trigger_id": f"{int(time.time())}.{uuid.uuid4().hex}",
        }  # fmt: skip
        body = urlencode(fields).encode()
        return await self._post(body, "application/x-www-form-urlencoded")

    async def _post(self, body: bytes, content_type: str, *, thread_ts: str = "") -> Sent:
        assert self._session is not None, "use SlackDriver as an async context manager"
        timestamp = int(time.time())
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(timestamp),
            "X-Slack-Signature": slack_signature(SIGNING_SECRET, timestamp, body),
        }
        sent_at = time.perf_counter()
        async with self._session.post(self.events_url, data=body, headers=headers) as response:
            text = await response.text()
            return Sent(response.status, sent_at, time.perf_counter() - sent_at, text, thread_ts)
