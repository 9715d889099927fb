"""The App Home tab: the bindings a user may see, the health of their endpoints, how to bind."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from relay_plugin.core.endpoints import endpoint_key
from relay_plugin.core.manager import EndpointStatus, RelayManager
from relay_plugin.core.store import BindingStore, BotBinding
from relay_plugin.slack.permissions import BindPermission
from relay_plugin.slack.poster import SlackFailure, slack_error
from relay_plugin.slack.text import escape_text

log = logging.getLogger(__name__)

CHANNELS_CACHE_TTL_S = 60.0
MAX_CACHED_USERS = 10_000
CHANNEL_TYPES = "public_channel,private_channel"
CHANNELS_PAGE_SIZE = 200  # the page size Slack recommends for users.conversations
MAX_CHANNEL_PAGES = 10
# Slack's limits for a Home tab view (Block Kit reference, 2026).
MAX_VIEW_BLOCKS = 100
MAX_SECTION_CHARS = 3_000
# Longer endpoints are cut, so that one line always fits in a section (at most about 1,100
# characters with a 120-character error whose every character is escaped).
MAX_ENDPOINT_CHARS = 200
# Header, intro, divider, the binding help, and room for a notice and a "more channels" line.
_FIXED_BLOCKS = 7
_STATE_ICONS = {"closed": ":large_green_circle:", "half-open": ":large_yellow_circle:",
                "open": ":red_circle:"}  # fmt: skip


class HomeTab:
    """Publish a user's Home tab each time they open it (the ``app_home_opened`` event).

    Admins, by the rule of BindPermission.is_admin, see every binding of the workspace. Others see
    the bindings of the channels they are members of, which ``users.conversations`` lists and
    which are cached for ``ttl_s`` per user.
    """

    def __init__(
        self,
        store: BindingStore,
        manager: RelayManager,
        permission: BindPermission,
        *,
        ttl_s: float = CHANNELS_CACHE_TTL_S,
    ) -> None:
        self._store = store
        self._manager = manager
        self._permission = permission
        self._ttl_s = ttl_s
        self._channels: dict[tuple[str, str], tuple[float, frozenset[str]]] = {}

    async def handle(self, event: dict[str, Any], context: Any, client: AsyncWebClient) -> None:
        """Bolt listener for ``app_home_opened``; the Messages and About tabs are left alone."""
        if event.get("tab") != "home":
            return
        user = str(event.get("user", ""))
        team = str(context.get("team_id") or "")
        view = await self.build_view(client, team, user)
        try:
            await client.views_publish(user_id=user, view=view)
        except SlackFailure as exc:
            log.warning("views.publish failed team=%s user=%s error=%s",
                        team, user, slack_error(exc))  # fmt: skip

    async def build_view(self, client: AsyncWebClient, team: str, user: str) -> dict[str, Any]:
        """Return the Home tab view of ``user``: bindings, endpoint health and binding help."""
        notices: list[str] = []
        try:
            is_admin = await self._permission.is_admin(client, team, user)
        except SlackFailure as exc:
            log.warning("users.info failed team=%s user=%s error=%s", team, user, slack_error(exc))
            is_admin = False
        channels: frozenset[str] | None = None
        if not is_admin:
            try:
                channels = await self._member_channels(client, team, user)
            except SlackFailure as exc:
                error = slack_error(exc)
                log.warning("users.conversations failed team=%s user=%s error=%s",
                            team, user, error)  # fmt: skip
                notices.append(
                    ":warning: I could not list your channels: Slack answered "
                    f"`{escape_text(error)}`. If it is `missing_scope`, ask the app's operator "
                    "to add the `channels:read` and `groups:read` scopes and reinstall the app."
                )
                channels = frozenset()
        bindings = await asyncio.to_thread(self._visible_bindings, team, channels)
        may_bind = await self._permission.refusal(client, team, user) is None
        return {
            "type": "home",
            "blocks": self._blocks(bindings, is_admin=is_admin, may_bind=may_bind,
                                   notices=notices),  # fmt: skip
        }

    async def _member_channels(
        self, client: AsyncWebClient, team: str, user: str
    ) -> frozenset[str]:
        key = (team, user)
        now = time.monotonic()
        cached = self._channels.get(key)
        if cached and cached[0] > now:
            return cached[1]
        found: set[str] = set()
        cursor = ""
        for _ in range(MAX_CHANNEL_PAGES):
            response: Any = await client.users_conversations(
                user=user, types=CHANNEL_TYPES, exclude_archived=True,
                limit=CHANNELS_PAGE_SIZE, cursor=cursor or None,
            )  # fmt: skip
            found.update(str(channel.get("id")) for channel in response.get("channels") or [])
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or ""
            if not cursor:
                break
        else:
            # NOTE: bindings in channels past the first MAX_CHANNEL_PAGES pages are not shown.
            log.info("users.conversations: user=%s is in more than %d channels; showing the "
                     "first ones", user, MAX_CHANNEL_PAGES * CHANNELS_PAGE_SIZE)  # fmt: skip
        if len(self._channels) >= MAX_CACHED_USERS:
            self._channels.clear()
        channels = frozenset(found)
        self._channels[key] = (now + self._ttl_s, channels)
        return channels

    def _visible_bindings(self, team: str, channels: frozenset[str] | None) -> list[BotBinding]:
        """Return the team's bindings in ``channels``, or all of them when ``channels`` is None."""
        return [
            binding
            for binding in self._store.all()
            if binding.team_id == team and (channels is None or binding.channel_id in channels)
        ]

    def _blocks(
        self, bindings: list[BotBinding], *, is_admin: bool, may_bind: bool, notices: list[str]
    ) -> list[dict[str, Any]]:
        if is_admin:
            intro = "You are an admin, so you see every bot bound in this workspace."
        else:
            intro = "The bots bound in the channels you are a member of."
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": "Relay"}},
            _section(intro),
            *(_section(notice) for notice in notices),
        ]

        by_channel: dict[str, list[BotBinding]] = defaultdict(list)
        for binding in bindings:
            by_channel[binding.channel_id].append(binding)
        if not by_channel:
            blocks.append(_section("No bots are bound in these channels yet."))

        budget = MAX_VIEW_BLOCKS - _FIXED_BLOCKS
        shown = 0
        for channel in sorted(by_channel):
            statuses = [self._manager.status(binding) for binding in by_channel[channel]]
            sections = _channel_sections(channel, statuses)
            if len(sections) > budget:
                break
            blocks.extend(sections)
            budget -= len(sections)
            shown += 1

        hidden = len(by_channel) - shown
        if hidden:
            blocks.append(_context(f"{hidden} more channel(s) have bots bound; "
                                   "type `/relay status` in a channel to see them."))  # fmt: skip
        blocks.append({"type": "divider"})
        blocks.append(_section(_binding_help(may_bind)))
        return blocks


def _binding_help(may_bind: bool) -> str:
    text = (
        "*How to bind a bot*\n"
        "Invite me to a channel with `/invite @relay`. There, type `/relay bind <bot> <url>` "
        "with the bot instance's URL and `/relay test <bot>` to check it. Then mention me: "
        "`@relay <bot> <question>`. `/relay help` lists every command."
    )
    if not may_bind:
        text += "\n:lock: Only workspace admins and owners may bind and unbind bots here."
    return text


def _channel_sections(channel: str, statuses: list[EndpointStatus]) -> list[dict[str, Any]]:
    """Return one or more sections that list the channel's bots, each under Slack's size limit."""
    sections: list[dict[str, Any]] = []
    text = f"*<#{channel}>*"
    for status in statuses:
        line = _status_line(status)
        if len(text) + 1 + len(line) > MAX_SECTION_CHARS:
            sections.append(_section(text))
            text = f"*<#{channel}>* (continued)"
        text += "\n" + line
    sections.append(_section(text))
    return sections


def _status_line(status: EndpointStatus) -> str:
    breaker = status.breaker
    state = f"{_STATE_ICONS.get(breaker.state, '')} breaker {breaker.state}".strip()
    if breaker.state == "open":
        state += f", half-opens in {breaker.retry_in_s:.0f} s"
    stats = status.stats
    success = _when(stats.last_success_at.timestamp() if stats.last_success_at else None)
    if stats.last_latency_s is not None:
        success += f" ({stats.last_latency_s:.2f} s)"
    endpoint = endpoint_key(status.binding.url)
    if len(endpoint) > MAX_ENDPOINT_CHARS:
        endpoint = endpoint[: MAX_ENDPOINT_CHARS - 1] + "…"
    line = (
        f"• *{status.binding.bot}* → {escape_text(endpoint)}\n"
        f"      {state} · last success {success}"
    )
    if stats.last_failure_at is not None:
        error = escape_text(stats.last_error[:120])
        line += f" · last failure {_when(stats.last_failure_at.timestamp())}: {error}"
    return line


def _when(epoch: float | None) -> str:
    """Format a time with Slack's date token, so each reader sees it in their own time zone."""
    if epoch is None:
        return "never"
    stamp = int(epoch)
    fallback = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))
    return f"<!date^{stamp}^{{date_short}} {{time_secs}}|{fallback}>"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}
