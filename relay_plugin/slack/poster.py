"""Posting into Slack threads, with the failures of the Web API logged once and clearly."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

_POST_OPTIONS = {"unfurl_links": False, "unfurl_media": False}
_TOKEN_ERRORS = frozenset({"invalid_auth", "token_revoked", "account_inactive", "not_authed"})
_CHANNEL_ERRORS = {
    "not_in_channel": "invite the app to the channel with /invite @relay",
    "channel_not_found": "invite the app to the channel (private channels hide themselves)",
    "is_archived": "the channel is archived; unarchive it or bind the bot elsewhere",
}
SlackFailure = (SlackApiError, aiohttp.ClientError, asyncio.TimeoutError)


def slack_error(exc: BaseException) -> str:
    """Return Slack's error code of a failed Web API call, or the exception's type and text."""
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error"))
    return f"{type(exc).__name__}: {exc}"


class ThreadPoster:
    """Post and update the app's messages in a thread.

    slack_sdk's retry handlers on the client already retry 429s (after Retry-After), 5xx
    answers and connection errors. What still fails ends here: logged with the ids, and a
    rejected bot token is logged at ERROR once, then counted, so a revoked token does not flood
    the log.
    """

    def __init__(self) -> None:
        self.failures: Counter[str] = Counter()

    async def post(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str,
        payload: dict[str, Any],
        *,
        task_id: str,
    ) -> str | None:
        """Post into the thread; returns the message ts, or None after logging the failure."""
        try:
            response = await client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, **payload, **_POST_OPTIONS
            )
        except SlackFailure as exc:
            self._report("chat.postMessage", exc, channel, task_id)
            return None
        return str(response.get("ts", ""))

    async def update(
        self,
        client: AsyncWebClient,
        channel: str,
        ts: str,
        payload: dict[str, Any],
        *,
        task_id: str,
    ) -> bool:
        """Update one message in place; returns False after logging a failure."""
        try:
            await client.chat_update(channel=channel, ts=ts, **payload)
        except SlackFailure as exc:
            self._report("chat.update", exc, channel, task_id)
            return False
        return True

    async def replace(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str,
        working_ts: str,
        payloads: list[dict[str, Any]],
        *,
        task_id: str,
        answer: str = "",
    ) -> bool:
        """Replace the working note with the first payload and post the rest as replies.

        When the note cannot be updated, every payload is posted as a new reply. When a reply
        cannot be posted, the whole ``answer`` is logged with the task id so it is not lost.
        Returns whether everything was posted.
        """
        first, *rest = payloads
        if not await self.update(client, channel, working_ts, first, task_id=task_id):
            rest = payloads
        for payload in rest:
            if await self.post(client, channel, thread_ts, payload, task_id=task_id) is None:
                log.error("answer not posted channel=%s thread=%s task=%s answer=%r",
                          channel, thread_ts, task_id, answer or payload.get("text", ""))  # fmt: skip
                return False
        return True

    def _report(self, method: str, exc: BaseException, channel: str, task_id: str) -> None:
        error = slack_error(exc)
        self.failures[error] += 1
        if error in _TOKEN_ERRORS:
            if self.failures[error] == 1:
                log.error("%s failed: Slack rejected the bot token (%s); reinstall the app and "
                          "update SLACK_BOT_TOKEN. Later failures of this kind are logged at "
                          "DEBUG.", method, error)  # fmt: skip
            else:
                log.debug("%s failed channel=%s task=%s error=%s (%d times)",
                          method, channel, task_id, error, self.failures[error])  # fmt: skip
            return
        advice = _CHANNEL_ERRORS.get(error, "")
        log.warning("%s failed channel=%s task=%s error=%s%s", method, channel, task_id, error,
                    f"; {advice}" if advice else "")  # fmt: skip
