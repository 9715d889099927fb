"""The ``/relay`` slash command: parsing and the handler behind it."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from relay_plugin.core.endpoints import endpoint_key, validate_bot_name, validate_url
from relay_plugin.core.manager import EndpointStatus, RelayManager
from relay_plugin.core.store import BotBinding
from relay_plugin.core.tasks import TaskTracker
from relay_plugin.errors import InvalidBindingError, RelayPluginError
from relay_plugin.slack.permissions import BindPermission
from relay_plugin.slack.rendering import failure_line
from relay_plugin.slack.text import escape_text, unwrap_link

log = logging.getLogger(__name__)

COMMAND_TEXT_MAX = 4_000
TEST_PING = "ping"

USAGE = """\
*Usage of /relay*
• `/relay bind <bot> <url> [dedupe=yes] [token=<secret>]` binds a bot in this channel to the bot instance at `<url>`. \
`dedupe=yes` says the instance drops repeated `Idempotency-Key`s, so answers lost in transit may be retried. \
`token=<secret>` is sent as the bearer token to this bot instead of the app's default; it is never shown again.
• `/relay unbind <bot>` removes that bot from this channel.
• `/relay list` shows the bots bound in this channel.
• `/relay status` shows each bot's endpoint health: breaker state, last success and failure, latency.
• `/relay test <bot>` relays a ping and reports the round trip.
• `/relay help` shows this text.
Then mention the app: `@relay <bot> <question>`."""


class UsageError(RelayPluginError):
    """The command text does not match any form of ``/relay``."""


@dataclass(frozen=True, slots=True)
class ParsedCommand:
    """A ``/relay`` command split into its action and arguments."""

    action: str
    bot: str = ""
    url: str = ""
    options: dict[str, str] = field(default_factory=dict)


def parse_command(text: str) -> ParsedCommand:
    """Parse the text after ``/relay``; raises UsageError or InvalidBindingError."""
    if len(text) > COMMAND_TEXT_MAX:
        raise UsageError(
            f"The command text has {len(text)} characters; the maximum is {COMMAND_TEXT_MAX}."
        )
    words = text.split()
    if not words:
        return ParsedCommand("help")
    action, args = words[0].lower(), words[1:]
    if action in ("help", "list", "status"):
        if args:
            raise UsageError(f"`/relay {action}` takes no arguments.")
        return ParsedCommand(action)
    if action in ("unbind", "test"):
        if len(args) != 1:
            raise UsageError(f"Write `/relay {action} <bot>`, with exactly one bot name.")
        return ParsedCommand(action, bot=validate_bot_name(args[0]))
    if action == "bind":
        if len(args) < 2:
            raise UsageError("Write `/relay bind <bot> <url>`, e.g. `/relay bind review-bot https://bots.example.com:9080`.")
        bot = validate_bot_name(args[0])
        if "://" not in args[1] and any("://" in word for word in args[2:]):
            raise UsageError(
                f"The URL must follow the bot name directly. Bot names cannot contain spaces: "
                f"write `/relay bind {args[0]}-{args[1]} <url>` or another name without spaces."
            )
        url = validate_url(unwrap_link(args[1]))
        return ParsedCommand("bind", bot=bot, url=url, options=_parse_options(args[2:]))
    raise UsageError(f"Unknown action `{escape_text(words[0][:40])}`.")


def _parse_options(words: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        key = key.lower()
        # Values are never echoed: a mistyped option name may still carry a secret.
        if not sep or key not in ("dedupe", "token"):
            raise InvalidBindingError(
                "option", key, "bind options are dedupe=yes, dedupe=no and token=<secret>"
            )
        if key in options:
            raise InvalidBindingError("option", key, "give each option once")
        if key == "token":
            if not value:
                raise InvalidBindingError("option", key, "write token=<secret> with no spaces")
            options[key] = value
        elif value.lower() in ("yes", "no", "true", "false"):
            options[key] = "yes" if value.lower() in ("yes", "true") else "no"
        else:
            raise InvalidBindingError("option", word, "write dedupe=yes or dedupe=no")
    return options


class RelayCommand:
    """Handle ``/relay``. Every reply is ephemeral; only ``test`` waits on a remote, after the ack."""

    def __init__(
        self, manager: RelayManager, tracker: TaskTracker, permission: BindPermission
    ) -> None:
        self._manager = manager
        self._tracker = tracker
        self._permission = permission

    async def handle(
        self, ack: Any, command: dict[str, Any], respond: Any, client: AsyncWebClient
    ) -> None:
        """Bolt listener for ``/relay``."""
        team = command.get("team_id", "")
        channel = command.get("channel_id", "")
        user = command.get("user_id", "")
        try:
            parsed = parse_command(command.get("text", ""))
            if parsed.action == "test":
                binding = self._manager.find(team, channel, parsed.bot)
                self._tracker.spawn(self._test(binding, respond), name=f"test-{binding.bot}")
                await ack(response_type="ephemeral", text=f"Testing *{binding.bot}*…")
                return
            if parsed.action in ("bind", "unbind"):
                refusal = await self._permission.refusal(client, team, user)
                if refusal is not None:
                    log.info("refused /relay %s team=%s channel=%s user=%s",
                             parsed.action, team, channel, user)  # fmt: skip
                    await ack(response_type="ephemeral", text=f":lock: {refusal}")
                    return
            reply = await self._run(parsed, team, channel, user)
            if parsed.action == "bind":
                reply += await _membership_hint(client, channel)
        except RelayPluginError as exc:
            reply = f":warning: {exc.user_message}\n{_short_usage(exc)}".rstrip()
        except Exception:  # a listener must ack, or Slack shows the user a timeout
            log.exception("/relay failed team=%s channel=%s user=%s", team, channel, user)
            reply = ":warning: Something went wrong inside the relay app; the error is logged."
        await ack(response_type="ephemeral", text=reply)

    async def _run(self, parsed: ParsedCommand, team: str, channel: str, user: str) -> str:
        if parsed.action == "help":
            return USAGE
        if parsed.action == "list":
            return self._list(team, channel)
        if parsed.action == "status":
            return self._status(team, channel)
        if parsed.action == "unbind":
            if await self._manager.remove_binding(team, channel, parsed.bot):
                return f"Unbound *{parsed.bot}* from this channel."
            bound = _names(self._manager.list_bindings(team, channel))
            return f"No bot named *{parsed.bot}* is bound in this channel (bound here: {bound})."
        binding, kept = self._rebinding(parsed, team, channel, user)
        stored = await self._manager.add_binding(binding)
        notes = [text for text, on in (("with its own token", bool(stored.token)),
                                       ("deduplicates, so ambiguous failures are retried",
                                        stored.dedupe)) if on]  # fmt: skip
        dedupe = f" ({'; '.join(notes)})" if notes else ""
        dedupe += kept
        return (
            f"Bound *{stored.bot}* in this channel to {stored.url}{dedupe}.\n"
            f"Relays are posted to {endpoint_key(stored.url)}. "
            f"Try `/relay test {stored.bot}`, then mention me: `@relay {stored.bot} hello`."
        )

    def _rebinding(
        self, parsed: ParsedCommand, team: str, channel: str, user: str
    ) -> tuple[BotBinding, str]:
        """Build the binding to store and a note on what was kept from the one it replaces.

        Options not given keep their old values. The old token is kept only while the endpoint
        stays the same, so a secret never follows a bot to a new host.
        """
        old = self._manager.existing(team, channel, parsed.bot)
        token = parsed.options.get("token", "")
        dedupe = parsed.options.get("dedupe")
        note = ""
        if old is not None and not token and old.token:
            if endpoint_key(old.url) == endpoint_key(parsed.url):
                token = old.token
                note = ". It keeps its token"
            else:
                note = (". The old token was dropped because the endpoint changed; add "
                        "`token=<secret>` to set one")  # fmt: skip
        if dedupe is None:
            dedupe = "yes" if old is not None and old.dedupe else "no"
        binding = BotBinding(
            team_id=team, channel_id=channel, bot=parsed.bot, url=parsed.url,
            dedupe=dedupe == "yes", token=token, created_by=user,
        )  # fmt: skip
        return binding, note

    def _list(self, team: str, channel: str) -> str:
        bindings = self._manager.list_bindings(team, channel)
        if not bindings:
            return "No bots are bound in this channel. Bind one with `/relay bind <bot> <url>`."
        lines = [f"Bots bound in this channel ({len(bindings)}):"]
        for binding in bindings:
            extras = [word for word, on in (("token set", bool(binding.token)),
                                            ("dedupe", binding.dedupe)) if on]  # fmt: skip
            suffix = f" ({', '.join(extras)})" if extras else ""
            lines.append(f"• *{binding.bot}* → {binding.url}{suffix}")
        return "\n".join(lines)

    def _status(self, team: str, channel: str) -> str:
        bindings = self._manager.list_bindings(team, channel)
        if not bindings:
            return "No bots are bound in this channel, so there is no status to show."
        lines = ["Endpoint status of the bots bound in this channel:"]
        lines += [_status_line(self._manager.status(binding)) for binding in bindings]
        return "\n".join(lines)

    async def _test(self, binding: BotBinding, respond: Any) -> None:
        started = time.monotonic()
        try:
            outcome = await self._manager.send(
                binding.team_id,
                binding.channel_id,
                binding.bot,
                TEST_PING,
                session_key=f"slack:{binding.team_id}:{binding.channel_id}:test:{binding.bot}",
                metadata="{}",
            )
        except RelayPluginError as exc:
            text = f"Test of *{binding.bot}* failed: {failure_line(binding.bot, exc)}"
        else:
            if outcome.response.status == "working":
                text = (f":white_check_mark: *{binding.bot}* is reachable: it accepted the ping "
                        f"in {time.monotonic() - started:.2f} s and would report the result "
                        "later. A test does not wait for such reports.")  # fmt: skip
                await self._respond(respond, binding.bot, text)
                return
            answer = escape_text(outcome.response.content[:200]) or "(no text)"
            attempts = "attempt" if outcome.attempts == 1 else "attempts"
            text = (
                f":white_check_mark: *{binding.bot}* answered in "
                f"{time.monotonic() - started:.2f} s ({outcome.attempts} {attempts}, "
                f"status `{outcome.response.status}`): {answer}"
            )
        await self._respond(respond, binding.bot, text)

    async def _respond(self, respond: Any, bot: str, text: str) -> None:
        try:
            await respond(response_type="ephemeral", text=text)
        except Exception:  # the response_url may have expired; the log keeps the result
            log.exception("posting the test result failed bot=%s: %s", bot, text)


def _names(bindings: list[BotBinding]) -> str:
    return ", ".join(f"*{b.bot}*" for b in bindings) or "none"


def _short_usage(exc: RelayPluginError) -> str:
    return "Type `/relay help` for usage." if isinstance(exc, UsageError) else ""


def _status_line(status: EndpointStatus) -> str:
    breaker = status.breaker
    state = breaker.state
    if state == "open":
        state += f", half-opens in {breaker.retry_in_s:.0f} s"
    elif breaker.failures:
        state += f", {breaker.failures} recent failure(s)"
    stats = status.stats
    success = _when(stats.last_success_at.timestamp() if stats.last_success_at else None)
    if stats.last_latency_s is not None:
        success += f" ({stats.last_latency_s:.2f} s)"
    failure = _when(stats.last_failure_at.timestamp() if stats.last_failure_at else None)
    if stats.last_error:
        failure += f": {escape_text(stats.last_error[:120])}"
    return (
        f"• *{status.binding.bot}* {endpoint_key(status.binding.url)}\n"
        f"    breaker {state} · last success {success} · last failure {failure}"
    )


def _when(epoch: float | None) -> str:
    """Format a time with Slack's date token, so each reader sees it in their own zone."""
    if epoch is None:
        return "never"
    stamp = int(epoch)
    fallback = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))
    return f"<!date^{stamp}^{{date_short}} {{time_secs}}|{fallback}>"


async def _membership_hint(client: AsyncWebClient, channel: str) -> str:
    """Return advice to invite the app when it is not a member of ``channel``, else ""."""
    invite = (
        "\n:information_source: I am not a member of this channel, so mentions here do not "
        "reach me yet. Invite me with `/invite @relay`."
    )
    try:
        # Bound, because a slash command must be acknowledged within 3 s; the hint is optional.
        response: Any = await asyncio.wait_for(client.conversations_info(channel=channel), 1.5)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.info("conversations.info failed channel=%s: %s", channel, exc)
        return ""
    except SlackApiError as exc:
        error = exc.response.get("error")
        if error == "channel_not_found":  # a private channel that the app is not in
            return invite
        log.info("conversations.info failed channel=%s error=%s", channel, error)
        return ""
    is_member = (response.get("channel") or {}).get("is_member", True)
    return "" if is_member else invite
