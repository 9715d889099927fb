"""Socket Mode: Slack delivers events and commands over a websocket that the app opens.

The app then needs no public URL. slack_bolt's aiohttp handler (slack_sdk's aiohttp
``SocketModeClient`` underneath) passes each envelope to the Bolt app and sends Bolt's response as
the ack. slack_sdk 3.48 reopens the connection with a fresh ``apps.connections.open`` at once when
Slack closes the websocket or sends a ``disconnect`` message. A connection that breaks without a
close frame is noticed by the session check that runs every ping interval (10 s measured after
a TCP reset), and one that stays open but unanswered after four ping intervals.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from relay_plugin.errors import ConfigError, RelayPluginError

log = logging.getLogger(__name__)

# Seconds between slack_sdk's pings and session checks (Bolt's default).
PING_INTERVAL_S = 10.0
CONNECT_TIMEOUT_S = 30.0
# apps.connections.open errors that mean the app-level token itself is wrong.
TOKEN_ERRORS = frozenset({
    "not_authed", "invalid_auth", "not_allowed_token_type", "token_revoked", "token_expired",
    "account_inactive", "missing_scope",
})  # fmt: skip


class SocketModeError(RelayPluginError):
    """The first Socket Mode connection could not be opened."""


class SocketModeConnection:
    """The app's Socket Mode connection to Slack: open() at startup, close() at shutdown."""

    def __init__(
        self,
        bolt: AsyncApp,
        app_token: str,
        *,
        ping_interval_s: float = PING_INTERVAL_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self._bolt = bolt
        self._app_token = app_token
        self._ping_interval_s = ping_interval_s
        self._connect_timeout_s = connect_timeout_s
        self._handler: AsyncSocketModeHandler | None = None

    async def open(self) -> None:
        """Connect to Slack. Raises ConfigError for a rejected token and SocketModeError otherwise.

        Only the first connection is checked here. Later reconnects are slack_sdk's, which
        retries them for as long as the process runs and logs each failure.
        """
        # The handler starts a task and an aiohttp session, so it is built inside the running loop.
        handler = AsyncSocketModeHandler(
            self._bolt, self._app_token, ping_interval=self._ping_interval_s
        )
        self._handler = handler
        try:
            # slack_sdk would retry a rejected token forever, logging a traceback each time.
            # Asking for the first URL here turns that into one clear error, and the client
            # connects to the URL it is given without calling apps.connections.open again.
            handler.client.wss_uri = await self._first_url()
            await asyncio.wait_for(handler.connect_async(), self._connect_timeout_s)
        except TimeoutError:
            await self.close()
            raise SocketModeError(
                f"Socket Mode: the websocket connection timed out after {self._connect_timeout_s:g} s. "
                "Check that this host can reach Slack's wss:// endpoints."
            ) from None
        except BaseException:
            await self.close()
            raise
        log.info("Socket Mode connected, so Slack events and commands arrive over the websocket")

    async def close(self) -> None:
        """Close the websocket and stop reconnecting. Calling it twice is harmless."""
        handler, self._handler = self._handler, None
        if handler is not None:
            await handler.close_async()
            log.info("Socket Mode connection closed")

    async def _first_url(self) -> str:
        try:
            response = await self._bolt.client.apps_connections_open(app_token=self._app_token)
        except SlackApiError as exc:
            error = str(exc.response.get("error", ""))
            if error in TOKEN_ERRORS:
                raise ConfigError(
                    "SLACK_APP_TOKEN",
                    f"rejected by Slack's apps.connections.open ({error}). Generate an app-level "
                    "token with the connections:write scope under Basic Information, App-Level "
                    "Tokens.",
                ) from exc
            raise SocketModeError(f"Socket Mode: apps.connections.open failed: {error}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SocketModeError(
                f"Socket Mode: cannot reach Slack's Web API for apps.connections.open: {exc!r}"
            ) from exc
        return str(response["url"])
