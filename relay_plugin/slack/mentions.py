"""``@relay <bot> <text>`` mentions: routing, the RelayMessage fields, and the thread replies."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from relay_plugin.core.limits import FairUse, RelayKeys
from relay_plugin.core.manager import RelayManager
from relay_plugin.core.pending import PendingTask, PendingTasks
from relay_plugin.core.protocol import TaskStatus
from relay_plugin.core.sender import RetryWait
from relay_plugin.core.tasks import TaskTracker
from relay_plugin.errors import RelayPluginError
from relay_plugin.logs import set_relay_log_context
from relay_plugin.slack.callbacks import CALLBACK_PATH
from relay_plugin.slack.names import NameCache
from relay_plugin.slack.rendering import (
    answer_payloads,
    failure_payload,
    interrupted_line,
    refusal_line,
    working_payload,
)
from relay_plugin.slack.poster import ThreadPoster
from relay_plugin.slack.progress import ActiveRelay, ActiveRelays, AssistantStatus
from relay_plugin.slack.text import (
    decode_slack_text,
    strip_user_mention,
    unlabeled_user_ids,
)

log = logging.getLogger(__name__)

# Namespace of task ids: uuid5 of the Slack message and the bot, so a replayed event yields the
# same task id and a remote that deduplicates by Idempotency-Key never runs it twice.
TASK_ID_NAMESPACE = uuid.UUID("6f1c2a52-3e0b-5d6c-9a4e-2b7f0c9d8e11")
INTERRUPTED_POST_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Route:
    """Target of a mention: the bot and the Slack text meant for it."""

    bot: str
    text: str


def route_mention(text: str, bot_user_id: str, bound: list[str]) -> Route | str:
    """Pick the bot a mention is for, or return the reply that explains why none was picked.

    ``@relay <bot> <text>`` and ``@relay <bot>: <text>`` name the bot. When the first word is not
    a bound bot and the channel has exactly one, that bot gets the whole text.
    """
    rest = strip_user_mention(text, bot_user_id)
    first, _, after = rest.partition(" ")
    if "\n" in first:
        first, _, tail = first.partition("\n")
        after = f"{tail} {after}".strip()
    name = first.rstrip(":")
    bot = _match(name, bound)
    if bot is not None:
        target = Route(bot, after.strip())
    elif len(bound) == 1:
        target = Route(bound[0], rest)
    elif not bound:
        return "No bots are bound in this channel yet. Bind one with `/relay bind <bot> <url>`."
    else:
        names = ", ".join(f"`{b}`" for b in bound)
        return f"Which bot? Start with a bot name, e.g. `@relay {bound[0]} hello`. Bound here: {names}."
    if not target.text:
        return f"Nothing to send to *{target.bot}*: write the message after its name."
    return target


def _match(name: str, bound: list[str]) -> str | None:
    if name in bound:
        return name
    folded = [b for b in bound if b.lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


def task_id_for(team: str, channel: str, ts: str, bot: str) -> str:
    """Return the task id of one Slack message relayed to one bot."""
    return str(uuid.uuid5(TASK_ID_NAMESPACE, f"{team}/{channel}/{ts}/{bot}"))


def session_key_for(team: str, channel: str, thread_ts: str, bot: str) -> str:
    """Return the remote conversation key of one Slack thread with one bot."""
    return f"slack:{team}:{channel}:{thread_ts}:{bot}"


def is_from_bot_or_edit(event: dict[str, Any], own_user_id: str) -> bool:
    """Whether a message event must be ignored: any bot (this app included), or an edit."""
    return bool(
        event.get("bot_id")
        or event.get("bot_profile")
        or event.get("subtype")
        or event.get("edited")
        or (own_user_id and event.get("user") == own_user_id)
    )


@dataclass(frozen=True, slots=True)
class MentionLimits:
    """Sizes, times and addresses that shape one mention's relay."""

    event_ttl_s: float
    max_content_bytes: int
    max_answer_chars: int
    public_url: str = ""
    async_timeout_s: float = 3600.0


class MentionRelay:
    """Relay ``app_mention`` events to bound bots and post the answers in the thread."""

    def __init__(
        self,
        manager: RelayManager,
        tracker: TaskTracker,
        claim_events: Callable[[list[str], float], bool],
        names: NameCache,
        fair_use: FairUse,
        limits: MentionLimits,
        *,
        active: ActiveRelays,
        pending: PendingTasks,
        poster: ThreadPoster,
    ) -> None:
        self._manager = manager
        self._tracker = tracker
        self._claim_events = claim_events
        self._names = names
        self._fair_use = fair_use
        self._limits = limits
        self._poster = poster
        self._active = active
        self._pending = pending
        self._assistant = AssistantStatus()

    async def handle(
        self,
        event: dict[str, Any],
        body: dict[str, Any],
        context: Any,
        client: AsyncWebClient,
        request: Any,
    ) -> None:
        """Bolt listener for ``app_mention``; runs after the acknowledgement."""
        own_user = context.get("bot_user_id") or ""
        team = context.get("team_id") or body.get("team_id") or ""
        channel, ts = event.get("channel", ""), event.get("ts", "")
        if is_from_bot_or_edit(event, own_user):
            log.debug("ignored a mention from a bot or an edit channel=%s ts=%s", channel, ts)
            return

        retry = (request.headers.get("x-slack-retry-num") or ["0"])[0]
        # Everything from the event claim on runs in a task, so Slack's acknowledgement never
        # waits for the store's fsync.
        try:
            self._tracker.spawn(
                self._accept(event, body.get("event_id", ""), team, own_user, client, retry),
                name=f"mention-{channel}-{ts}",
            )
        except RuntimeError:
            log.error("shutting down: mention not relayed channel=%s ts=%s", channel, ts)

    async def _accept(
        self,
        event: dict[str, Any],
        event_id: str,
        team: str,
        own_user: str,
        client: AsyncWebClient,
        retry: str,
    ) -> None:
        """Relay the mention unless its event or its message was taken before."""
        channel, ts = event.get("channel", ""), event.get("ts", "")
        keys = [f"msg:{team}:{channel}:{ts}"]
        if event_id:
            keys.insert(0, f"event:{event_id}")
        if not await asyncio.to_thread(self._claim_events, keys, self._limits.event_ttl_s):
            log.info("ignored a repeated event event_id=%s channel=%s ts=%s retry=%s",
                     event_id, channel, ts, retry)  # fmt: skip
            return
        await self._relay(event, team, own_user, client)

    async def _relay(
        self, event: dict[str, Any], team: str, own_user: str, client: AsyncWebClient
    ) -> None:
        channel, ts, user = event["channel"], event["ts"], event.get("user", "")
        thread_ts = event.get("thread_ts") or ts
        bound = [b.bot for b in self._manager.list_bindings(team, channel)]
        route = route_mention(event.get("text", ""), own_user, bound)
        if isinstance(route, str):
            await self._poster.post(client, channel, thread_ts, {"text": route}, task_id="")
            return

        content = decode_slack_text(
            route.text, users=await self._names.users(client, team, unlabeled_user_ids(route.text))
        )
        size = len(content.encode("utf-8"))
        if size > self._limits.max_content_bytes:
            reply = (f"Not relayed: the message is {size:,} bytes and the maximum is "
                     f"{self._limits.max_content_bytes:,} bytes. Shorten it or share a link "
                     "instead.")  # fmt: skip
            await self._poster.post(client, channel, thread_ts, {"text": reply}, task_id="")
            return

        keys = RelayKeys(user=f"{team}:{user}", channel=f"{team}:{channel}",
                         thread=f"{team}:{channel}:{thread_ts}")  # fmt: skip
        refusal = self._fair_use.acquire(keys)
        if refusal is not None:
            log.info("relay refused limit=%r bot=%s channel=%s task=%s user=%s thread=%s",
                     refusal.limit, route.bot, channel, task_id_for(team, channel, ts, route.bot),
                     user, thread_ts)  # fmt: skip
            self._manager.count_refused(route.bot)
            reply = {"text": refusal_line(route.bot, refusal)}
            await self._poster.post(client, channel, thread_ts, reply, task_id="")
            return
        try:
            await self._deliver(client, team, channel, ts, thread_ts, user, route.bot, content)
        finally:
            self._fair_use.release(keys)

    async def _deliver(
        self,
        client: AsyncWebClient,
        team: str,
        channel: str,
        ts: str,
        thread_ts: str,
        user: str,
        bot: str,
        content: str,
    ) -> None:
        """Post the working note, relay, and replace the note with the answer or the failure."""
        task_id = task_id_for(team, channel, ts, bot)
        # This task handles this one relay, so every record it logs from here names it.
        set_relay_log_context(task_id=task_id, channel=channel, bot=bot)
        details = {"platform": "slack", "team": team, "channel": channel, "user": user,
                   "ts": ts, "thread_ts": thread_ts}  # fmt: skip
        if self._limits.public_url:
            details["reply_to"] = self._limits.public_url + CALLBACK_PATH
        relay = ActiveRelay(task_id, team, channel, thread_ts, "", bot, user, client,
                            task=asyncio.current_task())  # fmt: skip

        def retrying(wait: RetryWait) -> None:
            relay.activity = f"retrying in {wait.delay_s:.0f} s after attempt {wait.attempt} failed"

        # The relay starts while the working note is being posted, so the note's round trip to
        # Slack does not delay the answer. Awaiting `sending` from this task means cancelling
        # this task (Cancel button, shutdown) cancels the send too.
        sending = asyncio.ensure_future(self._manager.send(
            team, channel, bot, content,
            session_key=session_key_for(team, channel, thread_ts, bot),
            metadata=json.dumps(details), task_id=task_id, on_wait=retrying,
        ))  # fmt: skip
        try:
            working_ts = await self._poster.post(
                client, channel, thread_ts, working_payload(bot, task_id), task_id=task_id
            )
        except asyncio.CancelledError:
            sending.cancel()
            raise
        if working_ts is None:
            await self._abandon(sending, team, channel, bot, task_id)
            return
        relay.working_ts = working_ts
        self._active.add(relay)
        self._assistant.set(relay, f"is asking {bot}…")

        try:
            outcome = await sending
        except RelayPluginError as exc:
            await self._finish(relay, "failed", [failure_payload(bot, exc, task_id)])
            return
        except asyncio.CancelledError:
            if relay.final == "canceled":
                # The Cancel button did it, and its handler updates the note. A 202 may have
                # been recorded just before, so its pending row goes too.
                await self._pending.take(relay.task_id)
                return
            log.warning("relay interrupted by shutdown bot=%s channel=%s task=%s",
                        bot, channel, task_id)  # fmt: skip
            payload = failure_payload(bot, interrupted_line(bot), task_id)
            await asyncio.wait_for(self._finish(relay, "interrupted", [payload]),
                                   INTERRUPTED_POST_TIMEOUT_S)  # fmt: skip
            raise

        if outcome.response.status == TaskStatus.WORKING:
            await self._wait_for_report(relay)
            return
        answer = outcome.response.content
        payloads = answer_payloads(
            bot,
            answer,
            elapsed_s=outcome.elapsed_s,
            status=outcome.response.status,
            max_chars=self._limits.max_answer_chars,
        )
        await self._finish(relay, "answered", payloads, answer=answer)

    async def _abandon(
        self, sending: asyncio.Future[Any], team: str, channel: str, bot: str, task_id: str
    ) -> None:
        """Stop a relay whose working note could not be posted: no answer could be posted either."""
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        log.warning("relay stopped: its working note could not be posted bot=%s channel=%s "
                    "task=%s", bot, channel, task_id)  # fmt: skip
        binding = self._manager.existing(team, channel, bot)
        if binding is not None:
            self._tracker.spawn(self._manager.cancel(binding, task_id), name=f"cancel-{task_id}")

    async def _finish(
        self, relay: ActiveRelay, state: str, payloads: list[dict[str, Any]], *, answer: str = ""
    ) -> None:
        """Give the relay its final state and replace its note, unless a cancel came first."""
        if self._active.finish(relay.task_id, state) is None:
            log.info("dropped the %s result of task %s: it was canceled first", state, relay.task_id)
            return
        self._assistant.set(relay, "")
        async with relay.note_lock:
            await self._poster.replace(relay.client, relay.channel, relay.thread_ts,
                                       relay.working_ts, payloads, task_id=relay.task_id,
                                       answer=answer)  # fmt: skip

    async def _wait_for_report(self, relay: ActiveRelay) -> None:
        """Keep a task the remote accepted with 202 until its report arrives at the callback."""
        now = time.time()
        timeout_s = self._limits.async_timeout_s
        add = asyncio.ensure_future(self._pending.add(
            PendingTask(relay.task_id, relay.team, relay.channel, relay.thread_ts,
                        relay.working_ts, relay.bot, relay.user, now, now + timeout_s)
        ))  # fmt: skip
        try:
            # The row is written in a worker thread that a cancel cannot stop, so the row is
            # awaited even then: a canceled task's row is removed, and at shutdown it stays so
            # the task survives the restart.
            await asyncio.shield(add)
        except asyncio.CancelledError:
            await add
            if relay.final == "canceled":
                await self._pending.take(relay.task_id)
                return
            raise
        relay.task = None
        relay.activity = "accepted the task and will report back"
        log.info("task %s accepted by %s; waiting up to %.0f s for its report",
                 relay.task_id, relay.bot, timeout_s)  # fmt: skip
        if not self._limits.public_url:
            log.warning("%s answered 202 but RELAY_PUBLIC_URL is not set, so it was told no "
                        "callback address; the task times out in %.0f s", relay.bot, timeout_s)  # fmt: skip
