"""Local fake of the Slack Web API and of slash-command ``response_url`` targets.

Point ``AsyncWebClient(base_url=sim.api_url)`` at it. It stores messages as Slack would and
responds as Slack does: HTTP 200 with ``ok: false`` for errors, 429 with ``Retry-After`` when
rate limited. A test can inject failures and wait for changes without fixed sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from relay_plugin.tools.slack_blocks import parse_blocks
from relay_plugin.tools.slack_oauth import SlackOAuth
from relay_plugin.tools.slack_render import render_thread
from relay_plugin.tools.slack_workspace import Body, PostedMessage, SlackWorkspace, content_problem
from relay_plugin.tools.socket_mode import SocketModeServer

__all__ = ["ApiCall", "PostedMessage", "SlackSimulator", "render_thread"]

logger = logging.getLogger(__name__)

RESPONSE_URL_MAX_USES = 5
WAIT_FALLBACK_S = 0.1


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


class SlackSimulator(SlackWorkspace):
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
        app_token: str = "xapp-test",
    ) -> None:
        super().__init__(
            team_id=team_id, bot_user_id=bot_user_id, bot_id=bot_id, users=users,
            channels=channels, app_id=app_id,
        )  # fmt: skip
        self.bot_token = bot_token
        # When set, every Web API response lists these as the token's scopes in the
        # x-oauth-scopes header, as Slack does.
        self.scopes: list[str] | None = None
        self.socket_mode = SocketModeServer(self, app_token)
        self.oauth = SlackOAuth(self)
        self.calls: list[ApiCall] = []
        self.responses: list[Body] = []
        self.api_url = ""
        self.base_url = ""
        self._failures: dict[str, list[_Failure]] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._url_ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._methods: dict[str, Callable[[Body], Body]] = {
            "auth.test": self.auth_test,
            "chat.postMessage": self.post_message,
            "chat.update": self.update,
            "chat.postEphemeral": self.post_ephemeral,
            "users.info": self.users_info,
            "conversations.info": self.conversations_info,
            "users.conversations": self.users_conversations,
            "views.publish": self.views_publish,
            "assistant.threads.setStatus": self.set_assistant_status,
        }
        # (channel, thread_ts) -> every status set, in order; "" clears it.
        self.assistant_statuses: dict[tuple[str, str], list[str]] = {}

    def set_assistant_status(self, params: Body) -> Body:
        """``assistant.threads.setStatus``: record the status of an assistant thread."""
        channel, thread_ts = str(params.get("channel_id", "")), str(params.get("thread_ts", ""))
        if not channel or not thread_ts:
            return {"ok": False, "error": "invalid_arguments"}
        self.assistant_statuses.setdefault((channel, thread_ts), []).append(
            str(params.get("status", ""))
        )
        self.notify()
        return {"ok": True}

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve the fake on ``host:port`` (0 picks a free port) and set the URLs."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        self.socket_mode.add_routes(app)
        self.oauth.add_routes(app)
        app.router.add_post("/response/{url_id}", self._handle_response_url)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_port = self._runner.addresses[0][1]
        self.base_url = f"http://{host}:{bound_port}"
        self.api_url = f"{self.base_url}/api/"
        logger.info("Slack simulator listening on %s", self.base_url)

    async def stop(self) -> None:
        """Stop serving; calling it twice is harmless."""
        await self.oauth.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

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

        Status 429 responds with error ``ratelimited`` and a ``Retry-After`` header (default 1 s).
        """
        if times < 1:
            raise ValueError(f"times={times}: fail_next needs at least 1 call to fail")
        if status == 429:
            error = "ratelimited"
            retry_after = 1 if retry_after is None else retry_after
        self._failures.setdefault(method, []).append(_Failure(error, times, status, retry_after))

    def show_command_ack(self, channel: str, user: str, payload: Body, *, ts: str = "") -> None:
        """Show a slash command's immediate response the way Slack does (ephemeral by default).

        Pass a ``ts`` taken when the command was sent, so that the ack sorts before the
        response_url posts that the app may send before its ack arrives.
        """
        self._show_response(_ResponseUrl(channel, user), payload, ts=ts)

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 5.0, *, description: str = ""
    ) -> None:
        """Wait until ``predicate()`` is true; raise TimeoutError that describes the state."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                condition = description or getattr(predicate, "__qualname__", repr(predicate))
                recent = ", ".join(call.method for call in self.calls[-5:]) or "none"
                raise TimeoutError(
                    f"timed out after {timeout} s waiting for {condition}; the simulator stored "
                    f"{len(self._messages)} messages, {len(self.responses)} response_url posts "
                    f"and {len(self.calls)} API calls (last: {recent})"
                )
            self._changed.clear()
            # Every change recorded here wakes the wait at once. The fallback timeout re-checks
            # predicates about state that lives outside the simulator.
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, WAIT_FALLBACK_S))
            except TimeoutError:
                pass

    def notify(self) -> None:
        """Wake every wait_for."""
        self._changed.set()

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            params = await _read_params(request)
        except ValueError:
            self._record_call(request, method, {})
            return _reply({"ok": False, "error": "invalid_json"})
        self._record_call(request, method, params)

        failure = self._take_failure(method)
        if failure is not None:
            return _failure_reply(failure)
        if method == "apps.connections.open":
            # The app-level token, not the bot token, authenticates this method.
            app_token = _bearer_token(request.headers.get("Authorization", ""))
            return _reply(self.socket_mode.open_connection(app_token))
        if method == "oauth.v2.access":
            return _reply(self.oauth.access(params, request.headers.get("Authorization", "")))
        handler = self._methods.get(method)
        if handler is None:
            return _reply({"ok": False, "error": "unknown_method"})
        header_token = _bearer_token(request.headers.get("Authorization", ""))
        token = header_token or str(params.get("token", ""))
        if not token:
            return _reply({"ok": False, "error": "not_authed"})
        # The token picks the workspace: this one, or one that self.oauth added.
        owner, error = self.oauth.owner(token)
        if owner is None:
            return _reply({"ok": False, "error": error})
        if owner is not self:
            owner.calls.append(self.calls[-1])
            handler = owner._methods[method]
        response = _reply(handler(params))
        if owner.scopes is not None:
            response.headers["x-oauth-scopes"] = ",".join(owner.scopes)
        return response

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        target = self._response_urls.get(request.match_info["url_id"])
        if target is None:
            return _reply({"ok": False, "error": "invalid_url"}, status=404)
        failure = self._take_failure("response_url")
        if failure is not None:
            return _failure_reply(failure)
        # NOTE: these error bodies and the 404 for a used-up URL are guesses. Slack documents
        # the limit of 5 uses within 30 minutes; the 30 minutes are not simulated.
        if target.uses >= RESPONSE_URL_MAX_USES:
            return _reply({"ok": False, "error": "used_url"}, status=404)
        try:
            payload = json.loads(await request.read())
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return _reply({"ok": False, "error": "invalid_payload"}, status=400)
        problem = None if payload.get("delete_original") else content_problem(payload)
        if problem is not None:
            return _reply(problem, status=400)
        target.uses += 1
        self.responses.append(payload)
        self._show_response(target, payload)
        return _reply({"ok": True})

    def _show_response(self, target: _ResponseUrl, payload: Body, *, ts: str = "") -> None:
        previous = target.last
        if payload.get("delete_original"):
            if previous is not None:
                self.remove(previous)
                target.last = None
        elif previous is not None and payload.get("replace_original"):
            previous.text = str(payload.get("text", ""))
            previous.blocks = parse_blocks(payload)
            previous.updates += 1
            previous.raw = payload
            self.notify()
        else:
            public = payload.get("response_type") == "in_channel"
            target.last = PostedMessage(
                target.channel, ts or self.next_ts(), payload.get("thread_ts"),
                str(payload.get("text", "")), parse_blocks(payload), self.bot_user_id,
                ephemeral_to=None if public else target.user, raw=payload,
            )  # fmt: skip
            self.store(target.last)

    def _record_call(self, request: web.Request, method: str, params: Body) -> None:
        self.calls.append(ApiCall(method, params, dict(request.headers), request.method))
        self.notify()

    def _take_failure(self, method: str) -> _Failure | None:
        queue = self._failures.get(method)
        if not queue:
            return None
        failure = queue[0]
        failure.times -= 1
        if failure.times == 0:
            queue.pop(0)
        return failure


async def _read_params(request: web.Request) -> Body:
    params: Body = dict(request.query)
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


def _reply(body: Body, status: int = 200) -> web.Response:
    # aiohttp adds "; charset=utf-8" to a text body, which spares clients Slack's missing_charset.
    return web.json_response(body, status=status)


def _failure_reply(failure: _Failure) -> web.Response:
    response = _reply({"ok": False, "error": failure.error}, status=failure.status)
    if failure.retry_after is not None:
        response.headers["Retry-After"] = str(failure.retry_after)
    return response
