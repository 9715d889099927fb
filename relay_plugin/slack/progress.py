"""Relays in progress: their working notes, the status ticker, and the one final state each."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from relay_plugin.slack.poster import SlackFailure, ThreadPoster, slack_error
from relay_plugin.slack.rendering import working_payload

log = logging.getLogger(__name__)

# chat.update is a Tier 3 method: about 50 calls a minute per workspace. Status updates take at
# most this many a minute, leaving room for the answers themselves.
STATUS_UPDATES_PER_MINUTE = 30


@dataclass
class ActiveRelay:
    """One relay between its working note and its final state."""

    task_id: str
    team: str
    channel: str
    thread_ts: str
    working_ts: str
    bot: str
    user: str
    client: AsyncWebClient
    started: float = field(default_factory=time.monotonic)
    activity: str = "waiting for the answer"
    task: asyncio.Task[Any] | None = None
    final: str = ""
    canceled_by: str = ""
    last_update: float = 0.0
    # Held around every chat.update of the working note, so the final update is always last.
    note_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def elapsed_s(self) -> float:
        """Seconds since the relay started."""
        return time.monotonic() - self.started


class ActiveRelays:
    """The relays of this process that have a working note, by task id.

    ``finish`` decides the final state: the first caller wins and every later one gets None,
    so an answer and a cancel that race end in exactly one state. It never awaits, so no other
    coroutine can run between its check and its write.
    """

    def __init__(self) -> None:
        self._relays: dict[str, ActiveRelay] = {}

    def __len__(self) -> int:
        return len(self._relays)

    def add(self, relay: ActiveRelay) -> None:
        """Start tracking a relay."""
        self._relays[relay.task_id] = relay

    def get(self, task_id: str) -> ActiveRelay | None:
        """Return the relay with that task id, if it is still running here."""
        return self._relays.get(task_id)

    def running(self) -> list[ActiveRelay]:
        """Return the relays that have no final state yet."""
        return [relay for relay in self._relays.values() if not relay.final]

    def finish(self, task_id: str, state: str) -> ActiveRelay | None:
        """Set the final state and stop tracking; None when another state already won."""
        relay = self._relays.get(task_id)
        if relay is None or relay.final:
            return None
        relay.final = state
        del self._relays[task_id]
        return relay


class StatusTicker:
    """Refresh each working note with the elapsed time, about every ``interval_s`` seconds.

    One loop serves every relay, and a shared budget keeps the updates under Slack's chat.update
    limit: when it is spent, notes simply skip a refresh.
    """

    def __init__(self, active: ActiveRelays, poster: ThreadPoster, interval_s: float) -> None:
        self._active = active
        self._poster = poster
        self._interval_s = interval_s
        self._sent: deque[float] = deque()

    async def run(self) -> None:
        """Refresh notes until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            for relay in self._active.running():
                if relay.elapsed_s < self._interval_s or not self._take_budget():
                    continue
                await self.refresh(relay)

    async def refresh(self, relay: ActiveRelay) -> None:
        """Update one working note now, unless the relay has finished."""
        async with relay.note_lock:
            if relay.final:
                return
            payload = working_payload(relay.bot, relay.task_id, relay.activity, relay.elapsed_s)
            relay.last_update = time.monotonic()
            await self._poster.update(relay.client, relay.channel, relay.working_ts, payload,
                                      task_id=relay.task_id)  # fmt: skip

    def _take_budget(self) -> bool:
        now = time.monotonic()
        while self._sent and self._sent[0] <= now - 60:
            self._sent.popleft()
        if len(self._sent) >= STATUS_UPDATES_PER_MINUTE:
            return False
        self._sent.append(now)
        return True


class AssistantStatus:
    """Set the thread status of Slack's assistant threads, best effort.

    ``assistant.threads.setStatus`` works only where the workspace and the app have Slack's
    assistant features (and the ``assistant:write`` scope). The first failure in a workspace
    turns the calls off there, and no call ever delays or blocks a relay: each runs as its own
    task with a short timeout.
    """

    TIMEOUT_S = 3.0

    def __init__(self) -> None:
        self._off: set[str] = set()
        self._calls: set[asyncio.Task[None]] = set()

    def set(self, relay: ActiveRelay, status: str) -> None:
        """Start setting the status of the relay's thread; "" clears it.

        Assistant threads live in direct messages with the app, so channels are skipped.
        """
        if relay.team in self._off or not relay.channel.startswith("D"):
            return
        call = asyncio.get_running_loop().create_task(self._call(relay, status))
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)

    async def _call(self, relay: ActiveRelay, status: str) -> None:
        try:
            await asyncio.wait_for(
                relay.client.assistant_threads_setStatus(
                    channel_id=relay.channel, thread_ts=relay.thread_ts, status=status
                ),
                self.TIMEOUT_S,
            )
        except (*SlackFailure, TimeoutError) as exc:
            if relay.team not in self._off:
                self._off.add(relay.team)
                log.info("assistant.threads.setStatus failed (%s); thread statuses are off for "
                         "team %s", slack_error(exc), relay.team)  # fmt: skip
