"""Local fake of the Slack Web API and of slash-command ``response_url`` targets.

Point ``AsyncWebClient(base_url=sim.api_url)`` at it; it stores messages as Slack would, answers
as Slack does (HTTP 200 with ``ok: false`` for errors, 429 with ``Retry-After`` when rate
limited) and lets a test inject failures and wait for changes without fixed sleeps.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from relay_plugin.tools.slack_blocks import blocks_problem, parse_blocks

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 40_000
RESPONSE_URL_MAX_USES = 5
WAIT_FALLBACK_S = 0.1
DEFAULT_USERS: dict[str, dict[str, Any]] = {
    "U0001": {"name": "alice", "real_name": "Alice Example", "is_admin": True},
    "U0002": {"name": "bob", "real_name": "Bob Example"},
}


@dataclass
class PostedMessage:
    """One message as Slack stores it; ``raw`` is the payload of its last post or update."""

    channel: str
    ts: str
    thread_ts: str | None
    text: str
    blocks: list[dict[str, Any]]
    user: str
    ephemeral_to: str | None = None
    updates: int = 0
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiCall:
    """One Web API call: query, form and JSON parameters merged, and the request headers."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    http_method: str


@dataclass
class _Failure:
    error: str
    times: int
    status: int
    retry_after: int | None


@dataclass
class _ResponseUrl:
    channel: str
    user: str
    uses: int = 0
    last: PostedMessage | None = None


class SlackSimulator:
    """A fake Slack workspace served over HTTP on a local port."""

    def __init__(
        self,
        *,
        team_id: str = "T0001",
        bot_user_id: str = "U0RELAY",
        bot_id: str = "B0RELAY",
        bot_token: str = "xoxb-test",
        users: dict[str, dict] | None = None,
        channels: dict[str, dict] | None = None,
        app_id: str = "A0RELAY",
    ) -> None:
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.bot_token = bot_token
        self.app_id = app_id
        self.users = {
            user_id: self._user_object(user_id, fields)
            for user_id, fields in {
                bot_user_id: {"name": "relay", "real_name": "relay", "is_bot": True},
                **(DEFAULT_USERS if users is None else users),
            }.items()
        }
        self.channels = channels or {}  # overrides per channel id, e.g. {"C0002": {"is_member": False}}
        self.calls: list[ApiCall] = []
        self.responses: list[dict[str, Any]] = []
        self.api_url = ""
        self.base_url = ""
        self._messages: list[PostedMessage] = []
        self._failures: dict[str, list[_Failure]] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._url_ids = itertools.count(1)
        self._last_ts_us = 0
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "users.info": self._users_info,
            "conversations.info": self._conversations_info,
        }

    # Lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve the fake on ``host:port`` (0 picks a free port) and set the URLs."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/response/{url_id}", self._handle_response_url)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_port = self._runner.addresses[0][1]
        self.base_url = f"http://{host}:{bound_port}"
        self.api_url = f"{self.base_url}/api/"
        logger.info("Slack simulator listening on %s", self.base_url)

    async def stop(self) -> None:
        """Stop serving; calling it twice is harmless."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # What a test reads

    def messages(self, channel: str) -> list[PostedMessage]:
        """Return the channel's non-ephemeral messages, thread replies included, in ts order."""
        found = [m for m in self._messages if m.channel == channel and m.ephemeral_to is None]
        return sorted(found, key=lambda message: ts_key(message.ts))

    def thread(self, channel: str, thread_ts: str) -> list[PostedMessage]:
        """Return a thread's root (when the simulator stored it) and its replies, in ts order."""
        return [m for m in self.messages(channel) if thread_ts in (m.ts, m.thread_ts)]

    def ephemerals(self, channel: str, user: str | None = None) -> list[PostedMessage]:
        """Return ephemeral messages (postEphemeral, command acks, response_url posts)."""
        found = [
            m
            for m in self._messages
            if m.channel == channel and m.ephemeral_to and user in (None, m.ephemeral_to)
        ]
        return sorted(found, key=lambda message: ts_key(message.ts))

    def find(self, channel: str, ts: str) -> PostedMessage | None:
        """Return the message with this ts in the channel, or None."""
        return next((m for m in self._messages if m.channel == channel and m.ts == ts), None)

    def user_name(self, user_id: str) -> str:
        """Return a user's name, or the id itself for an unknown user."""
        return str(self.users.get(user_id, {}).get("name") or user_id)

    # What a test does

    def add_message(
        self, channel: str, text: str, user: str, thread_ts: str | None = None, *, ts: str = ""
    ) -> PostedMessage:
        """Store a message typed by a person, with a fresh ts unless ``ts`` is given."""
        message = PostedMessage(channel, ts or self._next_ts(), thread_ts, text, [], user)
        message.raw = {"channel": channel, "text": text, "thread_ts": thread_ts}
        return self._store(message)

    def new_response_url(self, *, channel: str = "C0001", user: str = "U0001") -> str:
        """Return a fresh ``response_url`` for a command typed by ``user`` in ``channel``."""
        url_id = f"R{next(self._url_ids):04d}"
        self._response_urls[url_id] = _ResponseUrl(channel, user)
        return f"{self.base_url}/response/{url_id}"

    def fail_next(
        self,
        method: str,
        error: str = "internal_error",
        *,
        times: int = 1,
        status: int = 200,
        retry_after: int | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail (``"response_url"`` for those posts).

        Status 429 answers ``ratelimited`` with a ``Retry-After`` header (default 1 s).
        """
        if status == 429:
            error = "ratelimited"
            retry_after = 1 if retry_after is None else retry_after
        self._failures.setdefault(method, []).append(_Failure(error, times, status, retry_after))

    def show_command_ack(self, channel: str, user: str, payload: dict[str, Any]) -> None:
        """Show a slash command's immediate answer the way Slack does (ephemeral by default)."""
        self._store_response(_ResponseUrl(channel, user), payload)

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 5.0, *, description: str = ""
    ) -> None:
        """Wait until ``predicate()`` is true; raise TimeoutError that describes the state."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                what = description or getattr(predicate, "__qualname__", repr(predicate))
                recent = ", ".join(call.method for call in self.calls[-5:]) or "none"
                raise TimeoutError(
                    f"timed out after {timeout} s waiting for {what}; the simulator stored "
                    f"{len(self._messages)} messages, {len(self.responses)} response_url posts "
                    f"and {len(self.calls)} API calls (last: {recent})"
                )
            self._changed.clear()
            # Every recorded change wakes the wait; the fallback covers state the app keeps.
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, WAIT_FALLBACK_S))
            except TimeoutError:
                pass

    # HTTP handlers

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            params = await _read_params(request)
        except ValueError:
            params = {}
            self._record_call(request, method, params)
            return _reply({"ok": False, "error": "invalid_json"})
        self._record_call(request, method, params)

        failure = self._take_failure(method)
        if failure is not None:
            return _failure_reply(failure)
        handler = self._methods.get(method)
        if handler is None:
            return _reply({"ok": False, "error": "unknown_method"})
        token = _bearer_token(request.headers.get("Authorization", "")) or params.get("token", "")
        if not token:
            return _reply({"ok": False, "error": "not_authed"})
        if not hmac.compare_digest(str(token).encode(), self.bot_token.encode()):
            return _reply({"ok": False, "error": "invalid_auth"})
        return _reply(handler(params))

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        target = self._response_urls.get(request.match_info["url_id"])
        if target is None:
            return _reply({"ok": False, "error": "invalid_url"}, status=404)
        failure = self._take_failure("response_url")
        if failure is not None:
            return _failure_reply(failure)
        # NOTE: the error bodies and the 404 for a used-up URL are guesses; Slack documents
        # only the limit of 5 uses within 30 minutes (the time limit is not simulated).
        if target.uses >= RESPONSE_URL_MAX_USES:
            return _reply({"ok": False, "error": "used_url"}, status=404)
        try:
            payload = json.loads(await request.read())
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return _reply({"ok": False, "error": "invalid_payload"}, status=400)
        if not (payload.get("text") or payload.get("blocks") or payload.get("delete_original")):
            return _reply({"ok": False, "error": "no_text"}, status=400)
        target.uses += 1
        self.responses.append(payload)
        self._store_response(target, payload)
        return _reply({"ok": True})

    # Web API methods

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://example.slack.com/",
            "team": "Example Workspace",
            "user": self.user_name(self.bot_user_id),
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
        }

    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel", ""))
        problem = self._channel_problem(channel) or _content_problem(params)
        if problem:
            return problem
        thread_ts = str(params.get("thread_ts") or "") or None
        message = PostedMessage(
            channel, self._next_ts(), thread_ts, _text(params), parse_blocks(params),
            self.bot_user_id, raw=params,
        )  # fmt: skip
        self._store(message)
        return {"ok": True, "channel": channel, "ts": message.ts, "message": self._as_event(message)}

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel", ""))
        message = self.find(channel, str(params.get("ts", "")))
        if message is None or message.ephemeral_to is not None:
            return {"ok": False, "error": "message_not_found"}
        if message.user != self.bot_user_id:
            return {"ok": False, "error": "cant_update_message"}
        problem = _content_problem(params)
        if problem:
            return problem
        # Slack keeps the previous blocks when an update has no "blocks" argument.
        if "text" in params or "markdown_text" in params:
            message.text = _text(params)
        if "blocks" in params:
            message.blocks = parse_blocks(params)
        message.updates += 1
        message.raw = params
        self._notify()
        return {
            "ok": True,
            "channel": channel,
            "ts": message.ts,
            "text": message.text,
            "message": self._as_event(message),
        }

    def _post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel", ""))
        user = str(params.get("user", ""))
        problem = self._channel_problem(channel) or _content_problem(params)
        if problem:
            return problem
        if user not in self.users:
            return {"ok": False, "error": "user_not_in_channel"}
        thread_ts = str(params.get("thread_ts") or "") or None
        message = PostedMessage(
            channel, self._next_ts(), thread_ts, _text(params), parse_blocks(params),
            self.bot_user_id, ephemeral_to=user, raw=params,
        )  # fmt: skip
        self._store(message)
        return {"ok": True, "message_ts": message.ts}

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(params.get("user", "")))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": user}

    def _conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_object(str(params.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": channel}

    # Helpers

    def _channel_object(self, channel_id: str) -> dict[str, Any] | None:
        if channel_id[:1] not in ("C", "G", "D") or len(channel_id) < 2:
            return None
        is_im = channel_id.startswith("D")
        channel: dict[str, Any] = {
            "id": channel_id,
            "name": "" if is_im else channel_id.lower(),
            "is_channel": channel_id.startswith("C"),
            "is_group": channel_id.startswith("G"),
            "is_im": is_im,
            "is_private": not channel_id.startswith("C"),
            "is_archived": False,
            "is_member": True,
            "is_ext_shared": False,
            "created": 1690000000,
            "context_team_id": self.team_id,
        }
        channel.update(self.channels.get(channel_id, {}))
        return channel

    def _channel_problem(self, channel_id: str) -> dict[str, Any] | None:
        channel = self._channel_object(channel_id)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if channel.get("is_archived"):
            return {"ok": False, "error": "is_archived"}
        if not channel.get("is_member"):
            return {"ok": False, "error": "not_in_channel"}
        return None

    def _user_object(self, user_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        name = fields.get("name", user_id.lower())
        user: dict[str, Any] = {
            "id": user_id, "team_id": self.team_id, "name": name, "real_name": name,
            "deleted": False, "is_admin": False, "is_owner": False, "is_primary_owner": False,
            "is_restricted": False, "is_ultra_restricted": False, "is_bot": False,
            "is_app_user": False, "updated": 1700000000,
        }  # fmt: skip
        user.update(fields)
        user.setdefault("profile", {"display_name": name, "real_name": user["real_name"]})
        return user

    def _as_event(self, message: PostedMessage) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": "message", "user": message.user, "bot_id": self.bot_id,
            "app_id": self.app_id, "team": self.team_id, "text": message.text, "ts": message.ts,
        }  # fmt: skip
        if message.thread_ts:
            event["thread_ts"] = message.thread_ts
        if message.blocks:
            event["blocks"] = message.blocks
        return event

    def _store(self, message: PostedMessage) -> PostedMessage:
        self._messages.append(message)
        self._notify()
        return message

    def _store_response(self, target: _ResponseUrl, payload: dict[str, Any]) -> None:
        previous = target.last
        if previous is not None and payload.get("delete_original"):
            self._messages.remove(previous)
            target.last = None
        elif previous is not None and payload.get("replace_original"):
            previous.text = str(payload.get("text", ""))
            previous.blocks = parse_blocks(payload)
            previous.updates += 1
            previous.raw = payload
        elif not payload.get("delete_original"):
            public = payload.get("response_type") == "in_channel"
            target.last = PostedMessage(
                target.channel, self._next_ts(), payload.get("thread_ts"),
                str(payload.get("text", "")), parse_blocks(payload), self.bot_user_id,
                ephemeral_to=None if public else target.user, raw=payload,
            )  # fmt: skip
            self._messages.append(target.last)
        self._notify()

    def _record_call(self, request: web.Request, method: str, params: dict[str, Any]) -> None:
        self.calls.append(ApiCall(method, params, dict(request.headers), request.method))
        self._notify()

    def _take_failure(self, method: str) -> _Failure | None:
        queue = self._failures.get(method)
        if not queue:
            return None
        failure = queue[0]
        failure.times -= 1
        if failure.times <= 0:
            queue.pop(0)
        return failure

    def _next_ts(self) -> str:
        # Real time in microseconds, forced to grow so every ts is unique and ordered.
        self._last_ts_us = max(time.time_ns() // 1000, self._last_ts_us + 100)
        seconds, micros = divmod(self._last_ts_us, 1_000_000)
        return f"{seconds}.{micros:06d}"

    def _notify(self) -> None:
        self._changed.set()


def ts_key(ts: str) -> tuple[int, int]:
    """Return a sort key for a Slack ts such as ``"1700000100.000200"``."""
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros.ljust(6, "0")[:6] or 0)


async def _read_params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.method != "POST" or not request.can_read_body:
        return params
    if request.content_type == "application/json":
        body = json.loads(await request.read())
        if not isinstance(body, dict):
            raise ValueError("the JSON body is not an object")
        params.update(body)
    else:
        form = await request.post()
        params.update({key: value for key, value in form.items() if isinstance(value, str)})
    return params


def _bearer_token(header: str) -> str:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _text(params: dict[str, Any]) -> str:
    return str(params.get("text") or params.get("markdown_text") or "")


def _content_problem(params: dict[str, Any]) -> dict[str, Any] | None:
    try:
        blocks = parse_blocks(params)
    except ValueError:
        return {"ok": False, "error": "invalid_blocks_format"}
    if not _text(params) and not blocks and not params.get("attachments"):
        return {"ok": False, "error": "no_text"}
    if len(_text(params)) > MAX_TEXT_CHARS:
        return {"ok": False, "error": "msg_too_long"}
    problem = blocks_problem(blocks)
    if problem:
        return {"ok": False, "error": "invalid_blocks", "errors": [problem]}
    return None


def _reply(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, content_type="application/json")


def _failure_reply(failure: _Failure) -> web.Response:
    response = _reply({"ok": False, "error": failure.error}, status=failure.status)
    if failure.retry_after is not None:
        response.headers["Retry-After"] = str(failure.retry_after)
    return response
