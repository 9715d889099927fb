"""The state of a fake Slack workspace and the Web API methods that read and change it.

SlackSimulator serves these methods over HTTP. Each method takes the call's parameters and
returns the JSON body Slack would send, with ``ok: false`` and Slack's error name on failure.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from relay_plugin.tools.slack_blocks import MAX_VIEW_BLOCKS, blocks_problem, parse_blocks

MAX_TEXT_CHARS = 40_000
DEFAULT_USERS: dict[str, dict[str, Any]] = {
    "U0001": {"name": "alice", "real_name": "Alice Example", "is_admin": True},
    "U0002": {"name": "bob", "real_name": "Bob Example"},
}

Body = dict[str, Any]


@dataclass
class PostedMessage:
    """One message as Slack stores it; ``raw`` is the payload of its last post or update."""

    channel: str
    ts: str
    thread_ts: str | None
    text: str
    blocks: list[dict[str, Any]]
    user: str
    ephemeral_to: str | None = None
    updates: int = 0
    raw: dict[str, Any] = field(default_factory=dict)


class SlackWorkspace:
    """Users, channels and messages of one workspace with one bot installed."""

    def __init__(
        self,
        *,
        team_id: str = "T0001",
        bot_user_id: str = "U0RELAY",
        bot_id: str = "B0RELAY",
        users: dict[str, dict] | None = None,
        channels: dict[str, dict] | None = None,
        app_id: str = "A0RELAY",
    ) -> None:
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        bot_user = {"name": "relay", "real_name": "relay", "is_bot": True}
        given_users = DEFAULT_USERS if users is None else users
        self.users = {
            user_id: self._user_object(user_id, fields)
            for user_id, fields in {bot_user_id: bot_user, **given_users}.items()
        }
        # Fields that override the default channel object, e.g. {"C0002": {"is_member": False}}.
        self.channels = channels or {}
        # Channel id -> the people in it. Everyone is in C0001 and in each channel of
        # ``channels``; tests change the sets to model other memberships. The bot's own
        # membership is the channel's ``is_member`` field.
        self.members: dict[str, set[str]] = {
            channel_id: set(given_users) for channel_id in ("C0001", *self.channels)
        }
        # User id -> the last Home tab view published for that user.
        self.home_views: dict[str, Body] = {}
        self._messages: list[PostedMessage] = []
        self._last_ts_us = 0

    # Queries

    def messages(self, channel: str) -> list[PostedMessage]:
        """Return the channel's non-ephemeral messages, thread replies included, in ts order."""
        found = [m for m in self._messages if m.channel == channel and m.ephemeral_to is None]
        return sorted(found, key=lambda message: ts_key(message.ts))

    def thread(self, channel: str, thread_ts: str) -> list[PostedMessage]:
        """Return a thread's root (when stored here) and its replies, in ts order."""
        return [m for m in self.messages(channel) if thread_ts in (m.ts, m.thread_ts)]

    def ephemerals(self, channel: str, user: str | None = None) -> list[PostedMessage]:
        """Return ephemeral messages (postEphemeral, command acks, response_url posts)."""
        found = [
            m
            for m in self._messages
            if m.channel == channel and m.ephemeral_to and user in (None, m.ephemeral_to)
        ]
        return sorted(found, key=lambda message: ts_key(message.ts))

    def find(self, channel: str, ts: str) -> PostedMessage | None:
        """Return the message with this ts in the channel, or None."""
        return next((m for m in self._messages if m.channel == channel and m.ts == ts), None)

    def user_name(self, user_id: str) -> str:
        """Return a user's name, or the id itself for an unknown user."""
        return str(self.users.get(user_id, {}).get("name") or user_id)

    def add_message(
        self, channel: str, text: str, user: str, thread_ts: str | None = None, *, ts: str = ""
    ) -> PostedMessage:
        """Store a message typed by a person, with a fresh ts unless ``ts`` is given."""
        message = PostedMessage(channel, ts or self.next_ts(), thread_ts, text, [], user)
        message.raw = {"channel": channel, "text": text, "thread_ts": thread_ts}
        return self.store(message)

    # Web API methods

    def auth_test(self, params: Body) -> Body:
        """Implement ``auth.test`` for the bot token."""
        return {
            "ok": True,
            "url": "https://example.slack.com/",
            "team": "Example Workspace",
            "user": self.user_name(self.bot_user_id),
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
        }

    def post_message(self, params: Body) -> Body:
        """Implement ``chat.postMessage``."""
        channel = str(params.get("channel", ""))
        problem = self._channel_problem(channel) or content_problem(params)
        if problem:
            return problem
        message = PostedMessage(
            channel, self.next_ts(), _thread_ts(params), message_text(params),
            parse_blocks(params), self.bot_user_id, raw=params,
        )  # fmt: skip
        self.store(message)
        event = self._as_event(message)
        return {"ok": True, "channel": channel, "ts": message.ts, "message": event}

    def update(self, params: Body) -> Body:
        """Implement ``chat.update`` for the bot's own messages."""
        channel = str(params.get("channel", ""))
        message = self.find(channel, str(params.get("ts", "")))
        if message is None or message.ephemeral_to is not None:
            return {"ok": False, "error": "message_not_found"}
        if message.user != self.bot_user_id:
            return {"ok": False, "error": "cant_update_message"}
        problem = content_problem(params)
        if problem:
            return problem
        # Slack keeps the previous blocks when an update has no "blocks" argument.
        if "text" in params or "markdown_text" in params:
            message.text = message_text(params)
        if "blocks" in params:
            message.blocks = parse_blocks(params)
        message.updates += 1
        message.raw = params
        self.notify()
        return {
            "ok": True,
            "channel": channel,
            "ts": message.ts,
            "text": message.text,
            "message": self._as_event(message),
        }

    def post_ephemeral(self, params: Body) -> Body:
        """Implement ``chat.postEphemeral``; the user must be a known member."""
        channel = str(params.get("channel", ""))
        user = str(params.get("user", ""))
        problem = self._channel_problem(channel) or content_problem(params)
        if problem:
            return problem
        if user not in self.users:
            return {"ok": False, "error": "user_not_in_channel"}
        message = PostedMessage(
            channel, self.next_ts(), _thread_ts(params), message_text(params),
            parse_blocks(params), self.bot_user_id, ephemeral_to=user, raw=params,
        )  # fmt: skip
        self.store(message)
        return {"ok": True, "message_ts": message.ts}

    def users_info(self, params: Body) -> Body:
        """Implement ``users.info``."""
        user = self.users.get(str(params.get("user", "")))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": user}

    def conversations_info(self, params: Body) -> Body:
        """Implement ``conversations.info``; any C, G or D id exists unless overridden."""
        channel = self._channel_object(str(params.get("channel", "")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": channel}

    def users_conversations(self, params: Body) -> Body:
        """Implement ``users.conversations`` for ``user`` (default: the bot), a page at a time.

        As for a bot token on Slack, a private channel is listed only when the bot is in it too.
        The cursor is the offset of the next page.
        """
        user = str(params.get("user") or self.bot_user_id)
        if user not in self.users:
            return {"ok": False, "error": "user_not_found"}
        types = set(str(params.get("types") or "public_channel").split(","))
        exclude_archived = str(params.get("exclude_archived", "")).lower() in ("true", "1")
        found: list[Body] = []
        for channel_id in sorted(self.members.keys() | self.channels.keys()):
            channel = self._channel_object(channel_id)
            if channel is None or channel["is_im"]:
                continue
            bot_is_member = bool(channel.get("is_member"))
            if user == self.bot_user_id:
                is_member = bot_is_member
            else:
                is_member = user in self.members.get(channel_id, set())
            kind = "private_channel" if channel["is_private"] else "public_channel"
            if not is_member or kind not in types:
                continue
            if (exclude_archived and channel.get("is_archived")) or (
                channel["is_private"] and not bot_is_member
            ):
                continue
            # Slack omits is_member from this method's channel objects.
            found.append({key: value for key, value in channel.items() if key != "is_member"})
        try:
            offset = int(params.get("cursor") or 0)
            limit = int(params.get("limit") or 100)
        except ValueError:
            return {"ok": False, "error": "invalid_cursor"}
        end = offset + max(1, limit)
        next_cursor = str(end) if end < len(found) else ""
        return {"ok": True, "channels": found[offset:end],
                "response_metadata": {"next_cursor": next_cursor}}  # fmt: skip

    def views_publish(self, params: Body) -> Body:
        """Implement ``views.publish`` for Home tab views and keep each user's last view."""
        user = str(params.get("user_id", ""))
        view = params.get("view")
        if isinstance(view, str):
            try:
                view = json.loads(view)
            except ValueError:
                view = None
        # NOTE: Slack's exact error names for these two cases are guesses.
        if user not in self.users or not isinstance(view, dict) or view.get("type") != "home":
            return {"ok": False, "error": "invalid_arguments"}
        blocks = view.get("blocks")
        problem = (
            "blocks must be a list"
            if not isinstance(blocks, list)
            else blocks_problem(blocks, max_blocks=MAX_VIEW_BLOCKS)
        )
        if problem:
            return {"ok": False, "error": "invalid_arguments",
                    "response_metadata": {"messages": [problem]}}  # fmt: skip
        self.home_views[user] = view
        self.notify()
        return {"ok": True, "view": {"id": f"V{user}", "team_id": self.team_id, **view}}

    # Storage

    def store(self, message: PostedMessage) -> PostedMessage:
        """Add a message and signal the change."""
        self._messages.append(message)
        self.notify()
        return message

    def remove(self, message: PostedMessage) -> None:
        """Delete a message and signal the change."""
        self._messages.remove(message)
        self.notify()

    def next_ts(self) -> str:
        """Return a fresh ts, later than every ts handed out before."""
        # Real time in microseconds, forced to grow so every ts is unique and ordered.
        self._last_ts_us = max(time.time_ns() // 1000, self._last_ts_us + 100)
        seconds, micros = divmod(self._last_ts_us, 1_000_000)
        return f"{seconds}.{micros:06d}"

    def notify(self) -> None:
        """Signal that the stored state changed; the simulator wakes its waiters here."""

    # Object shapes

    def _channel_object(self, channel_id: str) -> Body | None:
        if channel_id[:1] not in ("C", "G", "D") or len(channel_id) < 2:
            return None
        is_im = channel_id.startswith("D")
        channel: Body = {
            "id": channel_id,
            "name": "" if is_im else channel_id.lower(),
            "is_channel": channel_id.startswith("C"),
            "is_group": channel_id.startswith("G"),
            "is_im": is_im,
            "is_private": not channel_id.startswith("C"),
            "is_archived": False,
            "is_member": True,
            "is_ext_shared": False,
            "created": 1690000000,
            "context_team_id": self.team_id,
        }
        channel.update(self.channels.get(channel_id, {}))
        return channel

    def _channel_problem(self, channel_id: str) -> Body | None:
        channel = self._channel_object(channel_id)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if channel.get("is_archived"):
            return {"ok": False, "error": "is_archived"}
        if not channel.get("is_member"):
            return {"ok": False, "error": "not_in_channel"}
        return None

    def _user_object(self, user_id: str, fields: dict[str, Any]) -> Body:
        name = fields.get("name", user_id.lower())
        user: Body = {
            "id": user_id, "team_id": self.team_id, "name": name, "real_name": name,
            "deleted": False, "is_admin": False, "is_owner": False, "is_primary_owner": False,
            "is_restricted": False, "is_ultra_restricted": False, "is_bot": False,
            "is_app_user": False, "updated": 1700000000,
        }  # fmt: skip
        user.update(fields)
        user.setdefault("profile", {"display_name": name, "real_name": user["real_name"]})
        return user

    def _as_event(self, message: PostedMessage) -> Body:
        event: Body = {
            "type": "message", "user": message.user, "bot_id": self.bot_id,
            "app_id": self.app_id, "team": self.team_id, "text": message.text, "ts": message.ts,
        }  # fmt: skip
        if message.thread_ts:
            event["thread_ts"] = message.thread_ts
        if message.blocks:
            event["blocks"] = message.blocks
        return event


def ts_key(ts: str) -> tuple[int, int]:
    """Return a sort key for a Slack ts such as ``"1700000100.000200"``."""
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros.ljust(6, "0")[:6])


def message_text(params: Body) -> str:
    """Return the text of a post: ``text``, or ``markdown_text`` when that is given."""
    return str(params.get("text") or params.get("markdown_text") or "")


def content_problem(params: Body) -> Body | None:
    """Return Slack's error body for a post whose text or blocks Slack would reject, or None."""
    try:
        blocks = parse_blocks(params)
    except ValueError:
        return {"ok": False, "error": "invalid_blocks_format"}
    text = message_text(params)
    if not text and not blocks and not params.get("attachments"):
        return {"ok": False, "error": "no_text"}
    if len(text) > MAX_TEXT_CHARS:
        return {"ok": False, "error": "msg_too_long"}
    problem = blocks_problem(blocks)
    if problem:
        return {"ok": False, "error": "invalid_blocks", "errors": [problem]}
    return None


def _thread_ts(params: Body) -> str | None:
    return str(params.get("thread_ts") or "") or None
