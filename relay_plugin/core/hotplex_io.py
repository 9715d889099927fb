"""Import and export of HotPlex's ``bindings.json``.

The file is ``{"version": 1, "bindings": [{"platform", "chat_id", "bots": {name: url}}]}``.
Export adds two fields that HotPlex's Go decoder ignores: ``team_id``, and ``bot_options``
(``{name: {"dedupe": true, "token": "..."}}``, with the token only when secrets are asked for).
HotPlex keys bindings by chat id alone, so a channel bound in two workspaces exports as two entries
with the same ``chat_id``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from relay_plugin.core.protocol import RelayBinding
from relay_plugin.core.store import BindingStore, BotBinding, validate_binding
from relay_plugin.errors import BindingError, ProtocolError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_OPTION_NAMES = ("dedupe", "token")


class BindingsFileError(BindingError):
    """A bindings file cannot be imported; nothing was written."""

    def __init__(self, problems: list[str]) -> None:
        listing = "; ".join(problems)
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"bindings file not imported ({count} {noun}): {listing}")
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Skipped:
    """An entry or bot that an import left out, with the reason."""

    entry: str
    reason: str


@dataclass(slots=True)
class ImportReport:
    """Result of an import: new bindings, replaced bindings, and what it left out."""

    added: list[BotBinding] = field(default_factory=list)
    updated: list[BotBinding] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def export_bindings(store: BindingStore, include_secrets: bool = False) -> dict[str, Any]:
    """Return every binding as a HotPlex ``bindings.json`` document, one entry per channel."""
    entries: list[dict[str, Any]] = []
    for (team_id, channel_id), group in itertools.groupby(
        store.all(), key=lambda b: (b.team_id, b.channel_id)
    ):
        bindings = list(group)
        bots = {b.bot: b.url for b in bindings}
        entry = RelayBinding("slack", channel_id, bots, team_id).to_dict()
        options: dict[str, dict[str, Any]] = {}
        for binding in bindings:
            option: dict[str, Any] = {}
            if binding.dedupe:
                option["dedupe"] = True
            if include_secrets and binding.token:
                option["token"] = binding.token
            if option:
                options[binding.bot] = option
        if options:
            entry["bot_options"] = options
        entries.append(entry)
    return {"version": FORMAT_VERSION, "bindings": entries}


def import_bindings(
    store: BindingStore, data: Any, default_team: str = "", *, created_by: str = "import"
) -> ImportReport:
    """Write the bindings of a parsed ``bindings.json`` to ``store`` in one transaction.

    Entries without ``team_id`` go to ``default_team``. Entries for other platforms are skipped.
    Any invalid entry, bot name or URL raises BindingsFileError listing all of them, and then
    nothing is written. A bot without a ``token`` option keeps the token it already has, because
    an export leaves tokens out unless asked. Bindings that would not change are skipped.

    NOTE: the added/updated/unchanged split is read just before the write transaction, so a
    process writing the same bindings at that moment can make the report stale (not the data).
    """
    report = ImportReport()
    parsed = _parse_document(data, default_team, created_by, report)

    changes: list[BotBinding] = []
    for label, binding, has_token in parsed:
        current = store.get(binding.team_id, binding.channel_id, binding.bot)
        if current is not None and not has_token:
            binding = replace(binding, token=current.token)
        if current is None:
            report.added.append(binding)
        elif (current.url, current.token, current.dedupe) == (
            binding.url, binding.token, binding.dedupe,
        ):  # fmt: skip
            report.skipped.append(Skipped(label, "unchanged"))
            continue
        else:
            report.updated.append(binding)
        changes.append(binding)

    if changes:
        store.put_many(changes)
    logger.info(
        "imported bindings: %d added, %d updated, %d skipped",
        len(report.added), len(report.updated), len(report.skipped),
    )  # fmt: skip
    return report


def _parse_document(
    data: Any, default_team: str, created_by: str, report: ImportReport
) -> list[tuple[str, BotBinding, bool]]:
    """Validate the whole document; return (label, binding, token given) for each bot."""
    if not isinstance(data, dict):
        raise BindingsFileError(
            [f"the file must be a JSON object with 'version' and 'bindings', not {_kind(data)}"]
        )
    version = data.get("version")
    if "version" not in data:
        raise BindingsFileError(
            [f"'version' is missing; a HotPlex bindings.json starts with "
             f'{{"version": {FORMAT_VERSION}, "bindings": [...]}}']  # fmt: skip
        )
    if "bindings" not in data:
        raise BindingsFileError(
            ["'bindings' is missing; give the list of bindings, or [] for none"]
        )
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise BindingsFileError(
            [f"unsupported version {version!r}; relay-plugin reads version {FORMAT_VERSION}"]
        )
    entries = data.get("bindings")
    if entries is None:
        entries = []  # Go encodes an empty slice as null
    if not isinstance(entries, list):
        raise BindingsFileError([f"'bindings' must be a list, not {_kind(entries)}"])

    problems: list[str] = []
    parsed: list[tuple[str, BotBinding, bool]] = []
    seen: dict[tuple[str, str, str], str] = {}
    for index, raw in enumerate(entries):
        label = _entry_label(index, raw)
        try:
            entry = RelayBinding.from_dict(raw)
        except ProtocolError as exc:
            problems.append(f"{label}: {exc}")
            continue
        if entry.platform.lower() != "slack":
            report.skipped.append(Skipped(label, f"platform {entry.platform!r} is not slack"))
            continue
        if not entry.bots:
            report.skipped.append(Skipped(label, "it has no bots"))
            continue
        team_id = entry.team_id or default_team
        if not team_id:
            problems.append(
                f"{label}: no team_id; add \"team_id\" to the entry or give a default team "
                "(bindings import --team T...)"
            )
            continue
        options = _parse_options(label, raw.get("bot_options"), entry.bots, problems)
        for bot, url in entry.bots.items():
            bot_label = f"{label} bot {bot!r}"
            option = options.get(bot, {})
            candidate = BotBinding(
                team_id, entry.chat_id, bot, url,
                token=option.get("token", ""), dedupe=option.get("dedupe", False),
                created_by=created_by,
            )  # fmt: skip
            try:
                candidate = validate_binding(candidate)
            except BindingError as exc:
                problems.append(f"{bot_label}: {exc}")
                continue
            key = (team_id, entry.chat_id, bot)
            if key in seen:
                problems.append(f"{bot_label}: already given in {seen[key]}")
                continue
            seen[key] = label
            parsed.append((bot_label, candidate, "token" in option))
    if problems:
        raise BindingsFileError(problems)
    return parsed


def _parse_options(
    label: str, raw: Any, bots: Mapping[str, str], problems: list[str]
) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{label}: 'bot_options' must be an object, not {_kind(raw)}")
        return {}
    options: dict[str, dict[str, Any]] = {}
    for bot, option in raw.items():
        where = f"{label} bot_options {bot!r}"
        if bot not in bots:
            problems.append(f"{where}: no bot of that name in 'bots'")
            continue
        if not isinstance(option, dict):
            problems.append(f"{where}: must be an object, not {_kind(option)}")
            continue
        unknown = sorted(set(option) - set(_OPTION_NAMES))
        if unknown:
            problems.append(f"{where}: unknown option {', '.join(unknown)}; use dedupe or token")
            continue
        if not isinstance(option.get("dedupe", False), bool):
            problems.append(f"{where}: 'dedupe' must be true or false")
            continue
        if not isinstance(option.get("token", ""), str):
            problems.append(f"{where}: 'token' must be a string")
            continue
        options[bot] = option
    return options


def _entry_label(index: int, raw: Any) -> str:
    chat_id = raw.get("chat_id") if isinstance(raw, dict) else None
    if isinstance(chat_id, str) and chat_id:
        return f"entry {index} (chat_id {chat_id})"
    return f"entry {index}"


def _kind(value: Any) -> str:
    """Name the JSON type of a decoded value."""
    for kind, name in ((bool, "a boolean"), (dict, "an object"), (list, "an array"),
                       (str, "a string"), ((int, float), "a number")):  # fmt: skip
        if isinstance(value, kind):
            return name
    return "null"
