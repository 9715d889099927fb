"""The app factory: wires store, sender, breakers, manager and the Bolt app into one aiohttp app."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from relay_plugin.config import Settings
from relay_plugin.errors import ConfigError
from relay_plugin.core.breakers import BreakerRegistry
from relay_plugin.core.guard import TargetGuard
from relay_plugin.core.limits import EndpointGate, FairUse
from relay_plugin.core.manager import RelayManager
from relay_plugin.core.metrics import RelayMetrics
from relay_plugin.core.sender import RelaySender, new_client_session
from relay_plugin.core.store import BindingStore
from relay_plugin.core.tasks import TaskTracker
from relay_plugin.metrics import METRICS_PATH, SlackErrorCounter, metrics_handler
from relay_plugin.core.pending import PendingTasks
from relay_plugin.slack.callbacks import CALLBACK_PATH, MAX_REPORT_BYTES, TaskReports
from relay_plugin.slack.cancel import CancelButton
from relay_plugin.slack.commands import RelayCommand
from relay_plugin.slack.home import HomeTab
from relay_plugin.slack.mentions import MentionLimits, MentionRelay
from relay_plugin.slack.names import NameCache
from relay_plugin.slack.oauth import OAuthInstalls, add_oauth_routes
from relay_plugin.slack.permissions import BindPermission
from relay_plugin.slack.poster import ThreadPoster
from relay_plugin.slack.progress import ActiveRelays, StatusTicker
from relay_plugin.slack.rendering import CANCEL_ACTION_ID

log = logging.getLogger(__name__)

SLACK_EVENTS_PATH = "/slack/events"
AUTH_TEST_TIMEOUT_S = 10.0
SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", BindingStore)
MANAGER = web.AppKey("manager", RelayManager)
TRACKER = web.AppKey("tracker", TaskTracker)
BOLT = web.AppKey("bolt", AsyncApp)
METRICS = web.AppKey("metrics", RelayMetrics)
REPORTS = web.AppKey("reports", TaskReports)


def create_web_app(settings: Settings) -> web.Application:
    """Build the aiohttp application; resources open at startup and close at cleanup."""
    app = web.Application(client_max_size=MAX_REPORT_BYTES)
    app[SETTINGS] = settings
    app[TRACKER] = TaskTracker()
    app[METRICS] = RelayMetrics()
    app.cleanup_ctx.append(_store)
    app.cleanup_ctx.append(_relay_core)
    app.cleanup_ctx.append(_bolt)
    app.on_shutdown.append(_drain)
    if not settings.socket_mode:
        # Over Socket Mode nothing arrives here, and the signing secret that checks it may be unset.
        app.router.add_post(SLACK_EVENTS_PATH, _slack_events)
    app.router.add_post(CALLBACK_PATH, _report)
    if settings.oauth:
        add_oauth_routes(app)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get(METRICS_PATH, metrics_handler(app[METRICS]))
    return app


async def _store(app: web.Application) -> AsyncIterator[None]:
    store = await asyncio.to_thread(BindingStore, app[SETTINGS].data_dir)
    app[STORE] = store
    log.info("binding store %s opened", store.path)
    yield
    await asyncio.to_thread(store.close)


async def _relay_core(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    guard = TargetGuard(settings.allowed_hosts)
    session = new_client_session(settings.retry, guard=guard)
    sender = RelaySender(
        session, settings.retry, default_token=settings.relay_token, guard=guard
    )
    breakers = BreakerRegistry(settings.breaker)
    app[METRICS].watch_breakers(breakers)
    app[MANAGER] = RelayManager(
        app[STORE],
        sender,
        breakers,
        instance_name=settings.instance_name,
        gate=EndpointGate(
            settings.fair_use.endpoint_concurrency, settings.fair_use.endpoint_queue
        ),
        guard=guard,
        metrics=app[METRICS],
    )
    yield
    await session.close()
    await guard.close()


async def _bolt(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    session = aiohttp.ClientSession()
    client = AsyncWebClient(
        token=settings.slack_bot_token or None,
        base_url=settings.slack_api_url,
        session=session,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncServerErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=2),
            SlackErrorCounter(app[METRICS]),  # last, so it counts each call's final result
        ],
    )
    oauth = OAuthInstalls(settings, app[STORE], client) if settings.oauth else None
    bolt = AsyncApp(
        client=client,
        oauth_settings=oauth.settings if oauth else None,
        authorize=oauth.authorize if oauth else None,
        signing_secret=settings.slack_signing_secret,
        # Every listener acknowledges at once and leaves slow work to tracked tasks, so Bolt
        # can answer as soon as a listener returns; with False it polls for the ack every 10 ms.
        process_before_response=True,
        # _slack_events checks every HTTP request's signature before Bolt sees it, and Socket
        # Mode deliveries carry none, so Bolt's own second check would only repeat the HMAC.
        request_verification_enabled=False,
    )
    permission = BindPermission(settings.bind_policy, settings.admin_users)
    command = RelayCommand(app[MANAGER], app[TRACKER], permission)
    active, poster, names = ActiveRelays(), ThreadPoster(), NameCache()
    pending = PendingTasks(app[STORE])
    mentions = MentionRelay(
        app[MANAGER],
        app[TRACKER],
        app[STORE].claim_events,
        names,
        FairUse(settings.fair_use),
        MentionLimits(
            event_ttl_s=settings.event_ttl_s,
            max_content_bytes=settings.max_content_bytes,
            max_answer_chars=settings.max_answer_chars,
            public_url=settings.public_url,
            async_timeout_s=settings.async_timeout_s,
        ),
        active=active,
        pending=pending,
        poster=poster,
    )
    cancel = CancelButton(app[MANAGER], active, pending, poster, permission, names, app[TRACKER])
    bolt.action(CANCEL_ACTION_ID)(cancel.handle)
    app[REPORTS] = TaskReports(
        app[MANAGER], pending, active, poster, oauth.client_for if oauth else lambda team: client,
        default_token=settings.relay_token, max_answer_chars=settings.max_answer_chars,
    )  # fmt: skip
    loops = [
        asyncio.create_task(StatusTicker(active, poster, settings.status_interval_s).run()),
        asyncio.create_task(app[REPORTS].sweep(min(5.0, settings.async_timeout_s / 4))),
    ]
    bolt.command("/relay")(command.handle)
    bolt.event("app_mention")(mentions.handle)
    home = HomeTab(app[STORE], app[MANAGER], permission)
    tracker = app[TRACKER]

    async def home_opened(event: dict[str, Any], context: Any, client: AsyncWebClient) -> None:
        tracker.spawn(home.handle(event, context, client), name="home-tab")

    bolt.event("app_home_opened")(home_opened)
    app[BOLT] = bolt
    try:
        if oauth is not None:
            oauth.register(bolt, app)
        else:
            await _check_bot_token(client)
    except BaseException:
        await _stop(loops)
        await session.close()
        raise
    yield
    await _stop(loops)
    await session.close()


async def _stop(loops: list[asyncio.Task[None]]) -> None:
    for loop in loops:
        loop.cancel()
    await asyncio.gather(*loops, return_exceptions=True)


async def _report(request: web.Request) -> web.Response:
    return await request.app[REPORTS].handle(request)


async def _check_bot_token(client: AsyncWebClient) -> None:
    """Stop start-up when Slack rejects the bot token; only log when Slack cannot be reached.

    Without this check a wrong token surfaces later as Bolt's vague "installation no longer
    available" reply to every command, with nothing in the log that names the setting.
    """
    try:
        response = await asyncio.wait_for(client.auth_test(), AUTH_TEST_TIMEOUT_S)
    except SlackApiError as exc:
        error = exc.response.get("error")
        if error in ("invalid_auth", "token_revoked", "account_inactive", "not_authed"):
            raise ConfigError(
                "SLACK_BOT_TOKEN",
                f"Slack rejected it ({error}); copy the Bot User OAuth Token (xoxb-...) again "
                "from the app's OAuth & Permissions page",
            ) from None
        log.warning("auth.test failed at start-up: %s; continuing", error)
        return
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("auth.test failed at start-up, Slack may be unreachable: %s; continuing", exc)
        return
    log.info("connected to Slack as %s (%s) in team %s (%s)", response.get("user"),
             response.get("user_id"), response.get("team"), response.get("team_id"))  # fmt: skip


async def _drain(app: web.Application) -> None:
    cancelled = await app[TRACKER].drain(app[SETTINGS].shutdown_grace_s)
    if cancelled:
        log.warning("shutdown: %d relay(s) did not finish in time and were cancelled", cancelled)


async def _slack_events(request: web.Request) -> web.Response:
    # Bolt parses the body before it checks the signature, and answers 500 with a traceback
    # for a body that is not a JSON object or form. Checking the signature first means only
    # Slack's own requests reach Bolt; a signed but malformed body still gets a plain 400.
    body = await request.read()
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return web.Response(status=400, text="the request body is not UTF-8")
    verifier = SignatureVerifier(request.app[SETTINGS].slack_signing_secret)
    timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
    signature = request.headers.get("X-Slack-Signature", "")
    if not timestamp.isdigit() or not verifier.is_valid(body, timestamp, signature):
        log.info("rejected a request with an invalid or old Slack signature from %s",
                 request.remote)  # fmt: skip
        return web.Response(status=401, text="invalid request signature")
    try:
        response = await request.app[BOLT].async_dispatch(await to_bolt_request(request))
    except (ValueError, AttributeError, TypeError) as exc:  # JSON and form decoding inside Bolt
        log.warning("rejected a signed request with a malformed body: %s", exc)
        return web.Response(status=400, text="malformed request body")
    return await to_aiohttp_response(response)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})
