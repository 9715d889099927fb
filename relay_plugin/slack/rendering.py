"""Slack messages the plugin posts: working notes, answers and failure lines."""

from __future__ import annotations

import re
from typing import Any

from relay_plugin.core.limits import Refusal
from relay_plugin.errors import (
    BadAnswerError,
    CircuitOpenError,
    EndpointBusyError,
    RelayPluginError,
    RemoteHTTPError,
    RemoteTaskError,
    RemoteTimeoutError,
    RemoteUnreachableError,
    TargetBlockedError,
)
from relay_plugin.slack.text import defuse_mentions, escape_text

# Slack rejects a markdown block over 12,000 characters (and a message whose markdown blocks
# add up to more), so longer answers go out as several thread replies.
MARKDOWN_BLOCK_MAX = 12_000
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")

Payload = dict[str, Any]
CANCEL_ACTION_ID = "relay_cancel"


def split_markdown(text: str, limit: int = MARKDOWN_BLOCK_MAX) -> list[str]:
    """Split Markdown into chunks of at most ``limit`` characters without losing any text.

    Cuts fall on paragraph boundaries outside code fences where possible. A code block longer
    than ``limit`` is cut between lines, and each piece is closed and reopened with its fence so
    every chunk renders on its own. A single line longer than ``limit`` is cut inside the line.
    """
    if limit < 64:
        raise ValueError(f"limit {limit} is too small to split Markdown; use at least 64")
    chunks: list[str] = []
    current = ""
    for block in _blocks(text):
        for piece in _fit(block, limit):
            joined = f"{current}\n\n{piece}" if current else piece
            if len(joined) <= limit:
                current = joined
            else:
                chunks.append(current)
                current = piece
    if current or not chunks:
        chunks.append(current)
    return chunks


def _blocks(text: str) -> list[str]:
    """Group lines into paragraphs and whole fenced code blocks."""
    blocks: list[str] = []
    lines: list[str] = []
    fence = ""
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if fence:
            lines.append(line)
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                blocks.append("\n".join(lines))
                lines, fence = [], ""
        elif match:
            if lines:
                blocks.append("\n".join(lines))
            lines, fence = [line], match.group(1)
        elif line.strip():
            lines.append(line)
        elif lines:
            blocks.append("\n".join(lines))
            lines = []
    if lines:
        blocks.append("\n".join(lines))
    return blocks


def _fit(block: str, limit: int) -> list[str]:
    """Cut one block into pieces of at most ``limit`` characters."""
    if len(block) <= limit:
        return [block]
    lines = block.split("\n")
    match = _FENCE.match(lines[0])
    opener, closer = (lines[0], match.group(1)) if match else ("", "")
    body = lines[1:] if match else lines
    if match and _FENCE.match(body[-1] if body else ""):
        body = body[:-1]
    room = limit - (len(opener) + len(closer) + 2 if match else 0)
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for line in body:
        for part in [line[i : i + room] for i in range(0, len(line), room)] or [""]:
            if current and size + 1 + len(part) > room:
                pieces.append("\n".join(current))
                current, size = [], 0
            size += len(part) + (1 if current else 0)
            current.append(part)
    pieces.append("\n".join(current))
    if match:
        return [f"{opener}\n{piece}\n{closer}" for piece in pieces]
    return pieces


def refusal_line(bot: str, refusal: Refusal) -> str:
    """Return the reply to a mention that a fair-use limit stopped."""
    if refusal.retry_in_s > 0:
        when = f"Try again in {max(refusal.retry_in_s, 1):.0f} s."
    elif refusal.limit == "relays per thread":
        when = "Start a new thread to continue."
    else:
        when = "Try again when one of them has finished."
    return f":traffic_light: Not relayed to *{bot}*: {refusal.detail} (limit: {refusal.limit}). {when}"


def interrupted_line(bot: str) -> str:
    """Return the line that replaces the working note when shutdown cancels a relay."""
    return (
        f":octagonal_sign: The relay app is shutting down, so the answer of *{bot}* will not "
        "be posted here. Ask again in a minute."
    )


def working_payload(
    bot: str, task_id: str, activity: str = "waiting for the answer", elapsed_s: float = 0.0
) -> Payload:
    """Return the note shown while a relay runs: the bot, what it is doing, and a Cancel button."""
    line = f":hourglass_flowing_sand: *{bot}* is working on it: {activity}"
    if elapsed_s > 0:
        line += f" · {max(elapsed_s, 1):.0f} s"
    cancel = {
        "type": "button",
        "action_id": CANCEL_ACTION_ID,
        "text": {"type": "plain_text", "text": "Cancel"},
        "value": task_id,
    }
    return {
        "text": f":hourglass_flowing_sand: Asked *{bot}*, waiting for the answer…",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": line}},
            {"type": "actions", "block_id": "relay_controls", "elements": [cancel]},
        ],
    }


def canceled_payload(bot: str, canceled_by: str, elapsed_s: float, task_id: str) -> Payload:
    """Return the note that replaces the working note when someone cancels the relay."""
    line = f":no_entry_sign: Canceled by {canceled_by} after {elapsed_s:.0f} s; *{bot}* was told to stop."
    return _card(line, f"task `{task_id}`")


def answer_payloads(
    bot: str, content: str, *, elapsed_s: float, status: str, max_chars: int = 100_000
) -> list[Payload]:
    """Return the thread replies that carry an answer, in order.

    An answer over ``max_chars`` characters is cut there, with a note that says so.
    """
    text = defuse_mentions(content)
    if len(text) > max_chars:
        text = (
            f"{text[:max_chars]}\n\n_…answer truncated: the first {max_chars:,} of "
            f"{len(text):,} characters are shown (RELAY_MAX_ANSWER_CHARS)._"
        )
    if not text.strip():
        text = f"_{bot} accepted the task (status `{status}`) but sent no answer text._"
    chunks = split_markdown(text)
    payloads: list[Payload] = []
    for index, chunk in enumerate(chunks, start=1):
        footer = f"*{bot}* · {elapsed_s:.1f} s"
        if len(chunks) > 1:
            footer += f" · part {index} of {len(chunks)}"
        payloads.append(
            {
                "text": escape_text(f"{bot}: {chunk}"),
                "blocks": [
                    {"type": "markdown", "text": chunk},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": footer}]},
                ],
            }
        )
    return payloads


def failure_line(bot: str, error: RelayPluginError) -> str:
    """Return one line that states what went wrong with a relay and what happens next."""
    reason = escape_text(error.user_message)
    attempts = getattr(error, "attempts", 0)
    if attempts > 1:
        reason += f" (after {attempts} attempts)"
    if isinstance(error, CircuitOpenError):
        if error.retry_in <= 0:
            return (
                f":no_entry: *{bot}* is paused after repeated failures of its endpoint, and a "
                "probe request is checking whether it is back. Try again in a few seconds."
            )
        return (
            f":no_entry: *{bot}* is paused after repeated failures of its endpoint; "
            f"the next try is allowed in {max(error.retry_in, 1):.0f} s."
        )
    if isinstance(error, RemoteTimeoutError):
        return f":hourglass: *{bot}* did not answer in time: {reason}"
    if isinstance(error, RemoteUnreachableError):
        return f":electric_plug: *{bot}* could not be reached: {reason}"
    if isinstance(error, RemoteHTTPError):
        line = f":warning: *{bot}* answered with an error: {reason}"
        if error.excerpt:
            line += f". It said: `{escape_text(error.excerpt[:150])}`"
        if error.status in (401, 403):
            line += (". Check the bot's token: the app's RELAY_TOKEN, or a per-bot token set "
                     "with `/relay bind <bot> <url> token=<secret>`.")  # fmt: skip
        return line
    if isinstance(error, TargetBlockedError):
        return f":no_entry_sign: *{bot}* is bound to an address this app may not send to: {reason}"
    if isinstance(error, BadAnswerError):
        return f":warning: *{bot}* sent an answer that is not a relay response: {reason}"
    if isinstance(error, RemoteTaskError):
        return f":x: *{bot}* reports that {reason}"
    return f":warning: Relay to *{bot}* failed: {reason}"


def failure_payload(bot: str, error: RelayPluginError | str, task_id: str) -> Payload:
    """Return the compact card that replaces the working note when a relay fails.

    It says what failed and for which bot, whether anything will be retried, and the task id.
    """
    if isinstance(error, str):
        return _card(error, f"task `{task_id}`")
    return _card(failure_line(bot, error), f"{retry_note(error)} · task `{task_id}`")


def retry_note(error: RelayPluginError) -> str:
    """Return whether the app retries after this failure, in a few words."""
    if isinstance(error, CircuitOpenError):
        return "nothing was sent; mention the bot again after the pause"
    if isinstance(error, EndpointBusyError):
        return "nothing was sent; try again in a minute"
    if isinstance(error, TargetBlockedError):
        return "nothing was sent; an admin must change the bot's URL or RELAY_ALLOWED_HOSTS"
    if isinstance(error, (BadAnswerError, RemoteTaskError)):
        return "not retried, because the bot answered"
    attempts = getattr(error, "attempts", 0)
    if attempts:
        return f"{attempts} attempt{'s' if attempts != 1 else ''}, no more retries"
    return "not retried"


def _card(line: str, context: str) -> Payload:
    return {
        "text": line,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": line}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }
