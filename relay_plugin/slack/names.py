"""Display names of users, looked up through the Web API and cached briefly."""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)


class NameCache:
    """Resolve user ids to display names with ``users.info``, cached for ``ttl_s``.

    Entries are kept per workspace, because a user of another workspace may be visible to one
    installation and not to another. A failed lookup is cached too (as the bare id), so a missing
    scope costs one call per id per ``ttl_s``, not one per message.
    """

    def __init__(self, *, ttl_s: float = 600.0, max_entries: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: dict[tuple[str, str], tuple[float, str]] = {}

    async def users(self, client: AsyncWebClient, team: str, ids: set[str]) -> dict[str, str]:
        """Return display names of the given user ids, as the workspace ``team`` shows them."""
        return {uid: await self._lookup(client, team, uid) for uid in sorted(ids)}

    async def _lookup(self, client: AsyncWebClient, team: str, user_id: str) -> str:
        now = time.monotonic()
        cached = self._entries.get((team, user_id))
        if cached and cached[0] > now:
            return cached[1]
        name = user_id
        try:
            response: Any = await client.users_info(user=user_id)
        except SlackApiError as exc:
            log.info("users.info failed user=%s error=%s", user_id, exc.response.get("error"))
        else:
            user = response.get("user") or {}
            profile = user.get("profile") or {}
            name = profile.get("display_name") or user.get("real_name") or user.get("name") or name
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[(team, user_id)] = (now + self._ttl_s, name)
        return name
