"""The simulator's OAuth side: more workspaces, Slack's authorize page and ``oauth.v2.access``.

A test installs the app the way a browser does. The app's ``/slack/install`` redirects to
``/oauth/v2/authorize`` here, which approves at once, as a user who clicks *Allow*, and
redirects to the app's Redirect URL with a one-time code. The app exchanges that code through
``oauth.v2.access`` (HTTP Basic ``client_id:client_secret``) for the workspace's bot token.

Each workspace is a SlackSimulator of its own, with its own users, channels, messages and
``response_url`` server. The main simulator serves the Web API for all of them and sends each
call to the workspace whose bot token it carries.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import itertools
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from yarl import URL

if TYPE_CHECKING:
    from relay_plugin.tools.simulator import SlackSimulator
    from relay_plugin.tools.slack_workspace import Body

CLIENT_ID = "1111111111.2222222222"
CLIENT_SECRET = "sim-client-secret"
AUTHORIZE_PATH = "/oauth/v2/authorize"
# Cookies of the browser's Slack session: who is signed in, and to which workspace.
USER_COOKIE = "sim_user"
TEAM_COOKIE = "sim_team"


@dataclass(frozen=True)
class InstallResult:
    """The last page of an install in the browser: its HTTP status, text and URL."""

    status: int
    text: str
    url: str


@dataclass(frozen=True)
class _Grant:
    team_id: str
    user: str
    scopes: str
    redirect_uri: str | None


class SlackOAuth:
    """Workspaces that can install the app, the codes handed out, and the tokens revoked."""

    def __init__(
        self, sim: SlackSimulator, *, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET
    ) -> None:
        self.sim = sim
        self.client_id = client_id
        self.client_secret = client_secret
        # The app's Redirect URLs as its Slack settings list them. The first one is used when
        # the authorize request names none.
        self.redirect_urls: list[str] = []
        self.team_names: dict[str, str] = {sim.team_id: "Example Workspace"}
        # Team ids, in order, of every code exchanged for a token.
        self.exchanges: list[str] = []
        self._extra: dict[str, SlackSimulator] = {}
        self._revoked: set[str] = set()
        self._grants: dict[str, _Grant] = {}
        self._numbers = itertools.count(1)

    # Workspaces

    async def add_workspace(
        self,
        team_id: str,
        *,
        name: str,
        bot_token: str,
        bot_user_id: str = "U0RELAY",
        bot_id: str = "B0RELAY",
        channels: dict[str, dict] | None = None,
    ) -> SlackSimulator:
        """Create and start another workspace; its Web API calls arrive at the main simulator."""
        if team_id in self.workspaces():
            raise ValueError(f"workspace {team_id} exists already")
        workspace = type(self.sim)(
            team_id=team_id, bot_user_id=bot_user_id, bot_id=bot_id, bot_token=bot_token,
            channels=channels, app_id=self.sim.app_id,
        )  # fmt: skip
        await workspace.start()
        self._extra[team_id] = workspace
        self.team_names[team_id] = name
        return workspace

    def workspaces(self) -> dict[str, SlackSimulator]:
        """Return every workspace by team id, the main simulator's included."""
        return {self.sim.team_id: self.sim, **self._extra}

    def owner(self, token: str) -> tuple[SlackSimulator | None, str]:
        """Return the workspace of a bot token, or None and Slack's error for the token."""
        if token in self._revoked:
            return None, "token_revoked"
        for workspace in self.workspaces().values():
            if hmac.compare_digest(token.encode(), workspace.bot_token.encode()):
                return workspace, ""
        return None, "invalid_auth"

    def revoke(self, team_id: str) -> str:
        """Revoke a workspace's bot token, as uninstalling the app does; returns the token."""
        token = self.workspaces()[team_id].bot_token
        self._revoked.add(token)
        return token

    async def stop(self) -> None:
        """Stop the workspaces that add_workspace started."""
        for workspace in self._extra.values():
            await workspace.stop()

    # The browser side

    def add_routes(self, app: web.Application) -> None:
        """Serve Slack's authorize page on ``app``."""
        app.router.add_get(AUTHORIZE_PATH, self._authorize)

    async def install(self, app_url: str, team_id: str, *, user: str = "U0001") -> InstallResult:
        """Install the app at ``app_url`` into a workspace as ``user``, following every redirect.

        The app's install page passes ``team`` on to the authorize page, as Bolt does.
        """
        # The app's state cookie is Secure, which aiohttp keeps for http only on listed origins.
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[app_url])
        jar.update_cookies({USER_COOKIE: user}, URL(self.sim.base_url))
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            install_url = f"{app_url}/slack/install"
            async with session.get(install_url, params={"team": team_id}) as response:
                return InstallResult(response.status, await response.text(), str(response.url))

    async def _authorize(self, request: web.Request) -> web.Response:
        query = request.query
        if query.get("client_id") != self.client_id:
            return _page(400, "invalid_client_id")
        redirect_uri = query.get("redirect_uri")
        if redirect_uri is not None and redirect_uri not in self.redirect_urls:
            return _page(400, "bad_redirect_uri")
        target = redirect_uri or next(iter(self.redirect_urls), None)
        if target is None:
            return _page(400, "no_redirect_url: the app lists no Redirect URL")
        team_id = query.get("team") or request.cookies.get(TEAM_COOKIE) or self.sim.team_id
        workspace = self.workspaces().get(team_id)
        user = request.cookies.get(USER_COOKIE, "U0001")
        if workspace is None or user not in workspace.users:
            return _page(400, f"{user} cannot sign in to workspace {team_id}")
        code = f"{next(self._numbers)}.{secrets.token_hex(8)}"
        self._grants[code] = _Grant(team_id, user, query.get("scope", ""), redirect_uri)
        separator = "&" if "?" in target else "?"
        parameters = urlencode({"code": code, "state": query.get("state", "")})
        location = f"{target}{separator}{parameters}"
        raise web.HTTPFound(location)

    # oauth.v2.access

    def access(self, params: Body, authorization: str) -> Body:
        """Implement ``oauth.v2.access``: exchange a code for the bot token of its workspace."""
        client_id, client_secret = _basic_credentials(authorization)
        client_id = client_id or str(params.get("client_id", ""))
        client_secret = client_secret or str(params.get("client_secret", ""))
        if client_id != self.client_id:
            return {"ok": False, "error": "invalid_client_id"}
        if not hmac.compare_digest(client_secret.encode(), self.client_secret.encode()):
            return {"ok": False, "error": "bad_client_secret"}
        grant = self._grants.pop(str(params.get("code", "")), None)
        if grant is None:
            return {"ok": False, "error": "invalid_code"}
        if grant.redirect_uri is not None and params.get("redirect_uri") != grant.redirect_uri:
            return {"ok": False, "error": "bad_redirect_uri"}
        workspace = self.workspaces()[grant.team_id]
        if workspace.bot_token in self._revoked:
            # Installing again after an uninstall hands out a new token.
            workspace.bot_token = f"{workspace.bot_token}-{next(self._numbers)}"
        self.exchanges.append(grant.team_id)
        self.sim.notify()
        return {
            "ok": True, "access_token": workspace.bot_token, "token_type": "bot",
            "scope": grant.scopes, "bot_user_id": workspace.bot_user_id,
            "app_id": workspace.app_id,
            "team": {"id": grant.team_id, "name": self.team_names.get(grant.team_id, "")},
            "enterprise": None, "is_enterprise_install": False, "authed_user": {"id": grant.user},
        }  # fmt: skip


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    client_id, _, client_secret = decoded.partition(":")
    return client_id, client_secret


def _page(status: int, error: str) -> web.Response:
    return web.Response(status=status, text=f"Slack cannot install the app: {error}")
