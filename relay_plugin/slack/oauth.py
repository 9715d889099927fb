"""Installing the app into many workspaces through Slack's OAuth flow.

With SLACK_CLIENT_ID, SLACK_CLIENT_SECRET and SLACK_STATE_SECRET set, ``GET /slack/install``
redirects to Slack's authorize page and ``GET /slack/oauth_redirect`` exchanges the code for
the workspace's bot token and saves the installation in the store. Bolt then authorizes each
request with the token of the workspace it comes from. ``app_uninstalled`` and a revoked bot
token delete that workspace's installation, bindings and pending tasks.

The OAuth ``state`` is signed with SLACK_STATE_SECRET (slack_sdk's StatelessOAuthStateStore),
so it needs no storage and survives a restart between the two requests. It is not single-use:
within its 10 minutes a captured state can be replayed, but only from a browser that has
the matching state cookie, and Slack accepts each code once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.oauth.async_callback_options import (
    AsyncCallbackOptions,
    AsyncFailureArgs,
    AsyncSuccessArgs,
)
from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.response import BoltResponse
from slack_sdk.oauth.state_store import StatelessOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient

from relay_plugin.config import OAUTH_REDIRECT_PATH, Settings
from relay_plugin.core.store import BindingStore
from relay_plugin.errors import StoreError
from relay_plugin.slack.installations import StoreInstallations

log = logging.getLogger(__name__)

INSTALL_PATH = "/slack/install"
STATE_EXPIRATION_S = 600
# The bot scopes of the manifests, and no others.
BOT_SCOPES = (
    "app_mentions:read", "chat:write", "commands", "users:read", "channels:read", "groups:read",
)  # fmt: skip
OAUTH_FLOW = web.AppKey("oauth_flow", AsyncOAuthFlow)


class OAuthInstalls:
    """The OAuth side of the app: Bolt's flow settings, per-workspace clients and uninstalls.

    ``client`` is the app's Web API client. Every call this class sets up goes to its
    ``base_url`` (SLACK_API_URL), token rotation and the code exchange included.
    """

    def __init__(self, settings: Settings, store: BindingStore, client: AsyncWebClient) -> None:
        self._store = store
        self._client = client
        self.installations = StoreInstallations(store)
        # auth.test results are cached per token, so a request costs no extra call once its
        # workspace has been seen. A new installation brings a new token, and an uninstalled
        # workspace has no installation left to find.
        self.authorize = AsyncInstallationStoreAuthorize(
            logger=log,
            client_id=settings.slack_client_id,
            client_secret=settings.slack_client_secret,
            installation_store=self.installations,
            cache_enabled=True,
            client=client,
        )
        self.settings = AsyncOAuthSettings(
            client_id=settings.slack_client_id,
            client_secret=settings.slack_client_secret,
            scopes=list(BOT_SCOPES),
            user_scopes=[],
            # NOTE: when this is empty, Bolt falls back to os.environ["SLACK_REDIRECT_URI"],
            # which Settings.from_env has already read when the environment is os.environ.
            redirect_uri=settings.slack_redirect_uri or None,
            install_path=INSTALL_PATH,
            install_page_rendering_enabled=False,
            redirect_uri_path=OAUTH_REDIRECT_PATH,
            callback_options=AsyncCallbackOptions(success=_show_success, failure=_not_installed),
            authorization_url=settings.slack_authorize_url,
            installation_store=self.installations,
            state_store=StatelessOAuthStateStore(
                expiration_seconds=STATE_EXPIRATION_S,
                signing_secret=settings.slack_state_secret,
                logger=log,
            ),
            state_expiration_seconds=STATE_EXPIRATION_S,
            logger=log,
        )
        # The settings built an authorize of their own whose token rotator calls slack.com
        # whatever SLACK_API_URL is, so it is replaced by the one above.
        self.settings.authorize = self.authorize

    def register(self, bolt: AsyncApp, app: web.Application) -> None:
        """Listen for uninstalls and revoked tokens, and serve the install and redirect routes."""
        bolt.event("app_uninstalled")(self.app_uninstalled)
        bolt.event("tokens_revoked")(self.tokens_revoked)
        if bolt.oauth_flow is None:
            raise RuntimeError("the Bolt app was built without these OAuth settings")
        app[OAUTH_FLOW] = bolt.oauth_flow
        count = self.installations.count()
        log.info("OAuth: workspaces install the app at %s; %d workspace(s) installed",
                 INSTALL_PATH, count)  # fmt: skip

    def client_for(self, team: str) -> AsyncWebClient:
        """Return a Web API client with the bot token of workspace ``team``."""
        token = self.installations.bot_token(team)
        if token is None:
            log.warning("no installation in workspace %s, so its Slack calls will fail", team)
        client = self._client
        return AsyncWebClient(
            token=token,
            base_url=client.base_url,
            session=client.session,
            team_id=team,
            retry_handlers=list(client.retry_handlers or []),
        )

    async def app_uninstalled(self, context: Any) -> None:
        """Bolt listener for ``app_uninstalled``: delete the workspace's data."""
        await self._forget(context.get("team_id") or "", "the app was uninstalled")

    async def tokens_revoked(self, event: dict[str, Any], context: Any) -> None:
        """Bolt listener for ``tokens_revoked``: a revoked bot token deletes the workspace data."""
        team = context.get("team_id") or ""
        tokens = event.get("tokens") or {}
        if tokens.get("bot"):
            await self._forget(team, "its bot token was revoked")
            return
        # The app requests no user scopes, so a user token is revoked only after a change of
        # the app's settings; the bot keeps working.
        for user in tokens.get("oauth") or []:
            await self.installations.async_delete_installation(
                enterprise_id=context.get("enterprise_id"), team_id=team, user_id=user
            )
            log.info("workspace %s revoked the user token of %s", team, user)

    async def _forget(self, team: str, reason: str) -> None:
        if not team:
            log.warning("%s in an event without a workspace id; nothing was deleted", reason)
            return
        try:
            removed = await asyncio.to_thread(self._store.delete_team, team)
        except StoreError as exc:
            log.error("workspace %s: %s, but deleting its data failed: %s", team, reason, exc)
            return
        log.info("workspace %s: %s, so %d installation(s), %d binding(s) and %d pending "
                 "task(s) were deleted", team, reason, removed["installations"],
                 removed["bindings"], removed["pending_tasks"])  # fmt: skip


def add_oauth_routes(app: web.Application) -> None:
    """Serve ``GET /slack/install`` and ``GET /slack/oauth_redirect`` with ``app[OAUTH_FLOW]``."""
    app.router.add_get(INSTALL_PATH, _install)
    app.router.add_get(OAUTH_REDIRECT_PATH, _redirect)


async def _install(request: web.Request) -> web.Response:
    flow = request.app[OAUTH_FLOW]
    return await to_aiohttp_response(await flow.handle_installation(await to_bolt_request(request)))


async def _redirect(request: web.Request) -> web.Response:
    flow = request.app[OAUTH_FLOW]
    try:
        response = await flow.handle_callback(await to_bolt_request(request))
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("OAuth redirect: Slack's oauth.v2.access could not be reached: %r", exc)
        return web.Response(status=502, text="Slack could not be reached to finish the "
                            f"installation. Try again from {INSTALL_PATH}.")  # fmt: skip
    return await to_aiohttp_response(response)


async def _show_success(args: AsyncSuccessArgs) -> BoltResponse:
    # StoreInstallations.async_save has logged the installation.
    return await args.default.success(args)


async def _not_installed(args: AsyncFailureArgs) -> BoltResponse:
    log.warning("OAuth redirect rejected: %s", args.reason)
    return await args.default.failure(args)
