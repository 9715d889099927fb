"""Log setup of the command line: text or JSON lines on stderr, each tagged with its relay's ids.

Code that handles one relay enters ``relay_log_context`` (or calls ``set_relay_log_context`` at
the top of a task that handles one relay). Every record logged meanwhile, by any module, then
carries the task id, channel and bot. JSON lines have them as the fields ``task_id``,
``channel`` and ``bot``. Text lines end with ``task=``, ``channel=`` and ``bot=`` words unless
the message already contains them.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TextIO

LOG_FORMATS = ("text", "json")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True, slots=True)
class RelayIds:
    """The ids that name one relay in the logs."""

    task_id: str
    channel: str
    bot: str


_current_relay: ContextVar[RelayIds | None] = ContextVar("relay_log_ids", default=None)


@contextmanager
def relay_log_context(*, task_id: str, channel: str, bot: str) -> Iterator[None]:
    """Tag the records logged inside the ``with`` block (in this task) with the relay's ids."""
    token = _current_relay.set(RelayIds(task_id, channel, bot))
    try:
        yield
    finally:
        _current_relay.reset(token)


def set_relay_log_context(*, task_id: str, channel: str, bot: str) -> None:
    """Tag the records logged from here to the end of the current asyncio task.

    Each task has its own copy of the context, so this reaches neither the task that spawned
    this one nor any other task.
    """
    _current_relay.set(RelayIds(task_id, channel, bot))


class RelayIdsFilter(logging.Filter):
    """Copy the current relay's ids onto each record as ``task_id``, ``channel`` and ``bot``."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _current_relay.get()
        if ids is not None:
            record.task_id = ids.task_id
            record.channel = ids.channel
            record.bot = ids.bot
        return True


class TextFormatter(logging.Formatter):
    """The classic one-line format, plus the relay's ids that the message does not name."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        missing = [
            f"{word}={value}"
            for word, value in _relay_fields(record, text_words=True)
            if f"{word}=" not in record.message
        ]
        return " ".join([line, *missing])


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message and relay ids.

    A traceback goes into ``exception`` and a stack into ``stack``. JSON escapes newlines, so a
    record never spans two lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, timezone.utc)
        entry: dict[str, object] = {
            "time": created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{created.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_relay_fields(record, text_words=False))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _relay_fields(record: logging.LogRecord, *, text_words: bool) -> list[tuple[str, str]]:
    names = (("task", "task_id"), ("channel", "channel"), ("bot", "bot"))
    fields = []
    for word, attribute in names:
        value = getattr(record, attribute, None)
        if isinstance(value, str) and value:
            fields.append((word if text_words else attribute, value))
    return fields


class _RelayHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler that configure_logging installs, so a second call replaces it."""


def _drop_bolt_token_warning(record: logging.LogRecord) -> bool:
    """Drop Bolt 1.30's start-up warning that the passed client's token wins over SLACK_BOT_TOKEN.

    Bolt reads SLACK_BOT_TOKEN from the environment itself and warns because the app also
    passes a client; the client carries the same token (or, with OAuth, none is used), so the
    warning asks the operator to do nothing.
    """
    return not (
        record.name.startswith("slack_bolt")
        and "`token` will be unused" in record.getMessage()
    )


def configure_logging(
    level: str, log_format: str = "text", *, stream: TextIO | None = None
) -> None:
    """Send every log record of ``level`` and above to ``stream`` (stderr) as text or JSON.

    Called by the entry point, never on import. Like ``logging.basicConfig`` it does nothing
    when the root logger has handlers that it did not install, and a second call replaces its
    own handler. An unknown level means INFO and an unknown format means text, with a WARNING
    record about it, because the command line must log even when the settings are invalid.
    ``Settings.from_env`` rejects such values for serve and check.
    """
    root = logging.getLogger()
    if any(not isinstance(handler, _RelayHandler) for handler in root.handlers):
        return
    name = level.strip().upper() or "INFO"
    chosen_format = log_format.strip().lower() or "text"
    handler = _RelayHandler(sys.stderr if stream is None else stream)
    handler.addFilter(RelayIdsFilter())
    handler.addFilter(_drop_bolt_token_warning)
    handler.setFormatter(JsonFormatter() if chosen_format == "json" else TextFormatter())
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(getattr(logging, name) if name in _LEVELS else logging.INFO)
    log = logging.getLogger(__name__)
    if name not in _LEVELS:
        log.warning(
            "RELAY_LOG_LEVEL=%r is not one of %s; logging at INFO", level, ", ".join(_LEVELS)
        )
    if chosen_format not in LOG_FORMATS:
        log.warning("RELAY_LOG_FORMAT=%r is not text or json; logging as text", log_format)

