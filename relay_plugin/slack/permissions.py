"""Permission to change bindings: workspace admins and owners, listed users, or everyone."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

ROLE_CACHE_TTL_S = 300.0
LOOKUP_TIMEOUT_S = 2.0
MAX_CACHED_ROLES = 10_000


class BindPermission:
    """Decide whether a user may bind and unbind bots, under RELAY_BIND_POLICY.

    ``admins`` lets workspace admins and owners (``users.info``) and the ids in
    RELAY_ADMIN_USERS change bindings; ``everyone`` lets any member. Roles are cached for
    ``ttl_s`` so a burst of commands costs one ``users.info`` call per user.
    """

    def __init__(
        self, policy: str, admin_users: frozenset[str], *, ttl_s: float = ROLE_CACHE_TTL_S
    ) -> None:
        self._policy = policy
        self._admin_users = admin_users
        self._ttl_s = ttl_s
        self._roles: dict[tuple[str, str], tuple[float, bool]] = {}

    async def refusal(self, client: AsyncWebClient, team: str, user: str) -> str | None:
        """Return why ``user`` may not change bindings, or None when they may."""
        if self._policy == "everyone" or user in self._admin_users:
            return None
        try:
            is_admin = await self._is_admin(client, team, user)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            error = exc.response.get("error") if isinstance(exc, SlackApiError) else "no answer in time"
            log.warning("users.info failed team=%s user=%s error=%s", team, user, error)
            return (
                f"I could not check your role: Slack's users.info answered `{error}`. "
                "Ask a workspace admin to bind the bot, or ask the app's operator to check its "
                "`users:read` scope."
            )
        if is_admin:
            return None
        listed = ", ".join(f"<@{uid}>" for uid in sorted(self._admin_users))
        extra = f" and {listed}" if listed else ""
        return (
            f"Only workspace admins and owners{extra} may bind and unbind bots here. "
            "Ask one of them, or ask the app's operator to add your user id to "
            "RELAY_ADMIN_USERS or to set RELAY_BIND_POLICY=everyone."
        )

    async def is_admin(self, client: AsyncWebClient, team: str, user: str) -> bool:
        """Return whether ``user`` is listed in RELAY_ADMIN_USERS or is a workspace admin or owner.

        The result does not depend on RELAY_BIND_POLICY. Raises SlackApiError when users.info
        fails.
        """
        return user in self._admin_users or await self._is_admin(client, team, user)

    async def _is_admin(self, client: AsyncWebClient, team: str, user: str) -> bool:
        key = (team, user)
        now = time.monotonic()
        cached = self._roles.get(key)
        if cached and cached[0] > now:
            return cached[1]
        # Bound, because a slash command must be acknowledged within 3 s.
        response: Any = await asyncio.wait_for(client.users_info(user=user), LOOKUP_TIMEOUT_S)
        profile = response.get("user") or {}
        is_admin = bool(
            (profile.get("is_admin") or profile.get("is_owner") or profile.get("is_primary_owner"))
            and not profile.get("is_restricted")
            and not profile.get("is_ultra_restricted")
            and not profile.get("is_bot")
        )
        if len(self._roles) >= MAX_CACHED_ROLES:
            self._roles.clear()
        self._roles[key] = (now + self._ttl_s, is_admin)
        return is_admin
