"""Reports from remotes that answered 202: ``POST /relay/callback`` and the timeout sweep."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from relay_plugin.core import callback_auth
from relay_plugin.core.manager import RelayManager
from relay_plugin.core.pending import PendingTask, PendingTasks
from relay_plugin.core.protocol import RelayMessage, TaskStatus
from relay_plugin.errors import ProtocolError
from relay_plugin.slack.poster import ThreadPoster
from relay_plugin.slack.progress import ActiveRelays
from relay_plugin.slack.rendering import answer_payloads, failure_payload

log = logging.getLogger(__name__)

CALLBACK_PATH = "/relay/callback"
MAX_REPORT_BYTES = 4 * 1024 * 1024
_FINAL = {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELED}


class TaskReports:
    """Take reports of pending tasks, post them into their threads, and time out the silent ones.

    A report is accepted once: the pending row is deleted as it is taken, so a duplicate or a
    report that races a cancel or the timeout finds nothing and is ignored.
    """

    def __init__(
        self,
        manager: RelayManager,
        pending: PendingTasks,
        active: ActiveRelays,
        poster: ThreadPoster,
        client_for: Callable[[str], AsyncWebClient],
        *,
        default_token: str,
        max_answer_chars: int,
    ) -> None:
        self._manager = manager
        self._pending = pending
        self._active = active
        self._poster = poster
        self._client_for = client_for
        self._default_token = default_token
        self._max_answer_chars = max_answer_chars

    async def handle(self, request: web.Request) -> web.Response:
        """Handle ``POST /relay/callback``."""
        body = await request.read()
        try:
            report = RelayMessage.from_dict(json.loads(body))
        except (ValueError, ProtocolError) as exc:
            return _error(400, f"the body is not a RelayMessage: {exc}")
        if not report.task_id:
            return _error(400, "the report has no task_id")
        task = await self._pending.get(report.task_id)
        if task is None:
            log.info("ignored a report for task %s: nothing pending (finished, canceled, timed "
                     "out or unknown)", report.task_id)  # fmt: skip
            return _error(404, "no pending task has this task_id; it finished, was canceled or "
                               "timed out, and this report is ignored")  # fmt: skip
        binding = self._manager.existing(task.team_id, task.channel_id, task.bot)
        key = (binding.token if binding else "") or self._default_token
        problem = callback_auth.verify(key, request.headers, body)
        if problem:
            log.warning("rejected a report for task %s from %s: %s", report.task_id,
                        request.remote, problem)  # fmt: skip
            return _error(401, problem)
        if report.status == TaskStatus.WORKING:
            relay = self._active.get(report.task_id)
            if relay is not None and report.content:
                relay.activity = report.content[:150]
            return web.json_response({"ok": True})
        if report.status not in _FINAL:
            return _error(400, "status must be working, completed, failed or canceled")
        if await self._pending.take(report.task_id) is None:
            return web.json_response({"ok": True, "ignored": "the task already finished"})
        await self._post_report(task, report)
        return web.json_response({"ok": True})

    async def _post_report(self, task: PendingTask, report: RelayMessage) -> None:
        elapsed_s = time.time() - task.started_at
        if report.status == TaskStatus.COMPLETED:
            answer = report.response or report.content
            payloads = answer_payloads(task.bot, answer, elapsed_s=elapsed_s,
                                       status=report.status, max_chars=self._max_answer_chars)  # fmt: skip
        elif report.status == TaskStatus.FAILED:
            line = f":x: *{task.bot}* reports that the task failed: {report.error or 'no reason given'}"
            payloads, answer = [failure_payload(task.bot, line, task.task_id)], ""
        else:
            line = f":no_entry_sign: *{task.bot}* canceled the task."
            payloads, answer = [failure_payload(task.bot, line, task.task_id)], ""
        log.info("report for task %s: %s after %.1f s", task.task_id, report.status, elapsed_s)
        await self._replace(task, report.status, payloads, answer)

    async def sweep(self, interval_s: float) -> None:
        """Time out pending tasks whose deadline passed, every ``interval_s``, until cancelled."""
        while True:
            for task in await self._pending.take_expired():
                waited_s = task.expires_at - task.started_at
                waited = f"{waited_s / 60:.0f} min" if waited_s >= 120 else f"{waited_s:.0f} s"
                line = (f":hourglass: *{task.bot}* accepted the task but did not report back "
                        f"within {waited}, so the relay app stopped waiting.")  # fmt: skip
                log.warning("pending task %s of %s timed out", task.task_id, task.bot)
                await self._replace(task, "timed out", [failure_payload(task.bot, line, task.task_id)], "")
            await asyncio.sleep(interval_s)

    async def _replace(
        self, task: PendingTask, state: str, payloads: list[dict[str, Any]], answer: str
    ) -> None:
        relay = self._active.finish(task.task_id, state)
        client = relay.client if relay is not None else self._client_for(task.team_id)
        lock = relay.note_lock if relay is not None else asyncio.Lock()
        async with lock:
            await self._poster.replace(client, task.channel_id, task.thread_ts, task.working_ts,
                                       payloads, task_id=task.task_id, answer=answer)  # fmt: skip


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"ok": False, "error": reason}, status=status)
