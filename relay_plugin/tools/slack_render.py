"""The terminal view of a Slack thread, as a Slack user would read it."""

from __future__ import annotations

import re
from typing import Any

from relay_plugin.tools.slack_blocks import text_of
from relay_plugin.tools.slack_workspace import PostedMessage, SlackWorkspace, ts_key

_MARKUP = re.compile(r"<([@#!]?)([^<>|]+)(?:\|([^<>]*))?>")


def render_thread(
    workspace: SlackWorkspace, channel: str, thread_ts: str, *, viewer: str | None = None
) -> str:
    """Render a thread as a Slack user would read it, ephemerals included.

    With ``viewer`` only that user's ephemerals are shown, as in Slack; without it, all are.
    """
    ephemerals = [m for m in workspace.ephemerals(channel, viewer) if m.thread_ts == thread_ts]
    shown = sorted(
        workspace.thread(channel, thread_ts) + ephemerals,
        key=lambda message: ts_key(message.ts),
    )
    parts = [_render_message(workspace, message) for message in shown]
    return "\n\n".join(parts)


def _render_message(workspace: SlackWorkspace, message: PostedMessage) -> str:
    author = workspace.user_name(message.user)
    if message.user == workspace.bot_user_id:
        author += " (app)"
    notes = []
    if message.ephemeral_to:
        notes.append("(only visible to you)")
    if message.updates:
        notes.append("(edited)")
    header = " ".join([f"{author}:", *notes])
    body = _render_blocks(workspace, message.blocks) or _render_markup(workspace, message.text)
    lines = body.splitlines() or [""]
    return "\n".join([header, *(f"  {line}" for line in lines)])


def _render_blocks(workspace: SlackWorkspace, blocks: list[Any]) -> str:
    rendered: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "markdown":
            rendered.append(str(block.get("text", "")))  # standard Markdown, shown as is
        elif kind in ("section", "header"):
            texts = [text_of(block.get("text"))]
            texts += [text_of(item) for item in block.get("fields", [])]
            rendered.append(_render_markup(workspace, "\n".join(t for t in texts if t)))
        elif kind == "context":
            texts = [text_of(item) for item in block.get("elements", [])]
            rendered.append(_render_markup(workspace, " ".join(t for t in texts if t)))
        elif kind == "divider":
            rendered.append("---")
    return "\n".join(rendered)


def _render_markup(workspace: SlackWorkspace, text: str) -> str:
    """Show Slack markup (``<@U1>``, ``<#C1|name>``, ``<url|label>``) as Slack displays it."""

    def replace(match: re.Match[str]) -> str:
        sigil, target, label = match.groups()
        if sigil == "@":
            return f"@{label or workspace.user_name(target)}"
        if sigil == "#":
            return f"#{label or target}"
        if sigil == "!":  # <!here>, or a user group or date with its display text
            return label or f"@{target}"
        return f"{label} ({target})" if label else target

    # Slack escapes only these three characters in message text.
    shown = _MARKUP.sub(replace, text)
    return shown.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
