"""Slack message markup: decode what people typed, defuse what agents answer.

Slack sends text with ``<...>`` tokens (``<@U123|bob>``, ``<#C123|general>``,
``<https://example.com|label>``, ``<!here>``) and escapes ``&``, ``<`` and ``>`` as entities.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_TOKEN = re.compile(r"<([^<>\n]*)>")
_USER_ID = re.compile(r"<@([UW][A-Z0-9]+)>")
_SPECIAL = {"here", "channel", "everyone"}


def decode_entities(text: str) -> str:
    """Decode Slack's three entities; ``&amp;`` last so ``&amp;lt;`` stays ``&lt;``."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def escape_text(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` for a Slack ``text`` field, so nothing in it is markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unlabeled_user_ids(text: str) -> set[str]:
    """Return the user ids mentioned without a display label, the ones worth resolving."""
    return set(_USER_ID.findall(text))


def strip_user_mention(text: str, user_id: str) -> str:
    """Remove every mention of ``user_id`` (``<@U…>`` or ``<@U…|name>``) and trim the result."""
    if not user_id:
        return text.strip()
    pattern = re.compile(r"<@" + re.escape(user_id) + r"(?:\|[^<>]*)?>")
    return pattern.sub(" ", text).strip()


def unwrap_link(text: str) -> str:
    """Return the URL of a Slack link token (``<https://x|x>`` or ``<https://x>``), else ``text``."""
    match = re.fullmatch(r"<([^<>|]+)(?:\|[^<>]*)?>", text.strip())
    return decode_entities(match.group(1)) if match else decode_entities(text.strip())


def decode_slack_text(
    text: str,
    users: Mapping[str, str] | None = None,
    channels: Mapping[str, str] | None = None,
) -> str:
    """Turn Slack markup into what the person meant.

    ``users`` and ``channels`` map ids to names for mentions that arrived without a label.
    Links become ``label (url)``, or just the URL when the label repeats it.
    """
    users = users or {}
    channels = channels or {}

    def readable(match: re.Match[str]) -> str:
        body = match.group(1)
        target, _, label = body.partition("|")
        label = decode_entities(label)
        if target.startswith("@"):
            return "@" + (label or users.get(target[1:], target[1:]))
        if target.startswith("#"):
            return "#" + (label or channels.get(target[1:], target[1:]))
        if target.startswith("!"):
            return _special(target[1:], label)
        url = decode_entities(target)
        if not label or label == url:
            return url
        if label == _without_scheme(url):
            return label if url.startswith("mailto:") else url
        return f"{label} ({url})"

    return decode_entities(_TOKEN.sub(readable, text))


def _special(name: str, label: str) -> str:
    if label:
        return label if label.startswith("@") or name.startswith("date^") else "@" + label
    if name in _SPECIAL:
        return "@" + name
    if name.startswith("subteam^"):
        return "@" + name.split("^", 1)[1]
    return name


def _without_scheme(url: str) -> str:
    for prefix in ("mailto:", "https://", "http://", "tel:"):
        if url.startswith(prefix):
            return url[len(prefix) :]
    return url


def defuse_mentions(text: str) -> str:
    """Rewrite ``<!here>``, ``<!channel>``, ``<!everyone>``, ``<!subteam^…>`` and ``<@U…>`` as plain text.

    An agent's answer must never notify anyone: the broadcast tokens become ``@here`` and the
    like, which Slack shows as text when the message is posted without ``link_names``.
    """

    def plain(match: re.Match[str]) -> str:
        body = match.group(1)
        target, _, label = body.partition("|")
        if target.startswith("!"):
            return _special(target[1:], label)
        if target.startswith("@"):
            return "@" + (label or target[1:])
        return match.group(0)

    return _TOKEN.sub(plain, text)
