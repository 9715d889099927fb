"""The Cancel button on a working note."""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from relay_plugin.core.manager import RelayManager
from relay_plugin.core.pending import PendingTasks
from relay_plugin.core.tasks import TaskTracker
from relay_plugin.slack.names import NameCache
from relay_plugin.slack.permissions import BindPermission
from relay_plugin.slack.poster import SlackFailure, ThreadPoster
from relay_plugin.slack.progress import ActiveRelay, ActiveRelays
from relay_plugin.slack.rendering import canceled_payload

log = logging.getLogger(__name__)


class CancelButton:
    """Cancel a relay: final state, the note, and a notice to the remote.

    The person who asked and workspace admins may cancel. A relay still waiting for its HTTP
    answer is stopped here; one that the remote accepted with 202 is taken from the pending
    tasks, which also works after a restart. Whichever of answer and cancel comes first wins.
    """

    def __init__(
        self,
        manager: RelayManager,
        active: ActiveRelays,
        pending: PendingTasks,
        poster: ThreadPoster,
        permission: BindPermission,
        names: NameCache,
        tracker: TaskTracker,
    ) -> None:
        self._manager = manager
        self._active = active
        self._pending = pending
        self._poster = poster
        self._permission = permission
        self._names = names
        self._tracker = tracker

    async def handle(self, ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Bolt listener for the ``relay_cancel`` action: acknowledge, then cancel in a task."""
        await ack()
        self._tracker.spawn(self._click(body, client), name="cancel-click")

    async def _click(self, body: dict[str, Any], client: AsyncWebClient) -> None:
        action = (body.get("actions") or [{}])[0]
        task_id = str(action.get("value", ""))
        user = (body.get("user") or {}).get("id", "")
        team = (body.get("team") or {}).get("id", "")
        channel = (body.get("channel") or {}).get("id", "")
        relay = self._active.get(task_id)
        owner = relay.user if relay is not None else await self._pending_owner(task_id)
        if owner is None:
            await self._tell(client, channel, user, "This relay has already finished.")
            return
        if user != owner and not await self._may_cancel_any(client, team, user):
            await self._tell(client, channel, user,
                             f"Only <@{owner}>, who asked, or a workspace admin can cancel this relay.")  # fmt: skip
            return
        await self._cancel(client, task_id, relay, user, channel)

    async def _may_cancel_any(self, client: AsyncWebClient, team: str, user: str) -> bool:
        try:
            return await self._permission.is_admin(client, team, user)
        except SlackFailure as exc:
            log.warning("users.info failed team=%s user=%s: %s", team, user, exc)
            return False

    async def _pending_owner(self, task_id: str) -> str | None:
        task = await self._pending.get(task_id)
        return task.user_id if task is not None else None

    async def _cancel(
        self, client: AsyncWebClient, task_id: str, relay: ActiveRelay | None, user: str,
        channel: str,
    ) -> None:  # fmt: skip
        if relay is not None and relay.task is not None:
            if self._active.finish(task_id, "canceled") is None:
                await self._tell(client, channel, user, "This relay has already finished.")
                return
            relay.task.cancel()
            team, channel_id, working_ts = relay.team, relay.channel, relay.working_ts
            bot, started_at = relay.bot, time.time() - relay.elapsed_s
        else:
            task = await self._pending.take(task_id)
            if task is None:
                await self._tell(client, channel, user, "This relay has already finished.")
                return
            relay = self._active.finish(task_id, "canceled")
            team, channel_id, working_ts = task.team_id, task.channel_id, task.working_ts
            bot, started_at = task.bot, task.started_at
        name = (await self._names.users(client, team, {user})).get(user, user)
        log.info("relay canceled by user=%s bot=%s channel=%s task=%s", user, bot, channel_id, task_id)
        payload = canceled_payload(bot, f"@{name}", time.time() - started_at, task_id)
        if relay is not None:
            async with relay.note_lock:
                await self._poster.update(client, channel_id, working_ts, payload, task_id=task_id)
        else:
            await self._poster.update(client, channel_id, working_ts, payload, task_id=task_id)
        binding = self._manager.existing(team, channel_id, bot)
        if binding is not None:
            self._tracker.spawn(self._manager.cancel(binding, task_id), name=f"cancel-{task_id}")

    async def _tell(self, client: AsyncWebClient, channel: str, user: str, text: str) -> None:
        try:
            await client.chat_postEphemeral(channel=channel, user=user, text=text)
        except SlackFailure as exc:  # best effort: the click itself is already handled
            log.info("chat.postEphemeral failed channel=%s user=%s: %s", channel, user, exc)
