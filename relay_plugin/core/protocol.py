"""Wire types of the relay protocol, with their JSON encoding in one place.

The encoding follows HotPlex's Go package ``relay``: times are RFC 3339 with a zone, durations
are Go ``time.Duration`` values (nanoseconds as a JSON integer), and unknown fields are ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from relay_plugin.errors import ProtocolError

EXCERPT_CHARS = 200
GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


class TaskStatus(StrEnum):
    """The four task statuses of the protocol."""

    WORKING = "working"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


def format_time(value: datetime) -> str:
    """Format an aware datetime as RFC 3339 (``Z`` for UTC, as Go writes it)."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: RFC 3339 needs a zone")
    text = value.isoformat()
    return text.replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 time with zone; Go's nanosecond fractions are cut to microseconds."""
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time with a zone")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    micros = int((fraction or "0").ljust(6, "0")[:6])
    if zulu:
        zone = timezone.utc
    else:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        zone = timezone(offset if sign == "+" else -offset)
    return datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=zone
    )


def excerpt(body: bytes | str, limit: int = EXCERPT_CHARS) -> str:
    """Return the start of a body as printable text, for error messages and logs."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class RelayMessage:
    """A relay task sent to a remote bot (or reported back by one)."""

    task_id: str
    from_: str
    to: str
    content: str
    session_key: str = ""
    metadata: str = ""
    status: TaskStatus | None = None
    response: str = ""
    error: str = ""
    created_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """Encode for the wire. The text goes in ``content`` and, for HotPlex receivers, ``message``."""
        body: dict[str, Any] = {
            "task_id": self.task_id,
            "from": self.from_,
            "to": self.to,
            "content": self.content,
            "message": self.content,
        }
        optional = {
            "session_key": self.session_key,
            "metadata": self.metadata,
            "status": self.status.value if self.status else "",
            "response": self.response,
            "error": self.error,
            "created_at": format_time(self.created_at) if self.created_at else "",
        }
        body.update({key: value for key, value in optional.items() if value})
        return body

    @classmethod
    def from_dict(cls, data: Any) -> RelayMessage:
        """Decode a RelayMessage; ``message`` is accepted when ``content`` is absent."""
        if not isinstance(data, dict):
            raise ProtocolError(f"a RelayMessage must be a JSON object, not {type(data).__name__}")
        text = {name: _optional_str(data, name) for name in _MESSAGE_TEXT_FIELDS}
        status = text["status"]
        created = text["created_at"]
        try:
            parsed_status = TaskStatus(status) if status else None
        except ValueError:
            raise ProtocolError(f"unknown task status {status!r}") from None
        return cls(
            task_id=text["task_id"],
            from_=text["from"],
            to=text["to"],
            content=text["content"] or text["message"],
            session_key=text["session_key"],
            metadata=text["metadata"],
            status=parsed_status,
            response=text["response"],
            error=text["error"],
            created_at=_parse_time_field("created_at", created) if created else None,
        )


_MESSAGE_TEXT_FIELDS = (
    "task_id", "from", "to", "content", "message", "session_key", "metadata",
    "status", "response", "error", "created_at",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RelayResponse:
    """A remote's answer to a relay.

    ``status`` is kept as text: besides the four task statuses, HotPlex's stub receiver answers
    ``"ok"`` with an empty task id and Go's zero time, and that answer is accepted.
    """

    task_id: str
    status: str
    content: str = ""
    timestamp: datetime = GO_ZERO_TIME
    error: str = ""
    duration_ns: int = 0

    @property
    def duration(self) -> timedelta:
        """The remote's own time for the task."""
        return timedelta(microseconds=self.duration_ns / 1000)

    @property
    def failed(self) -> bool:
        """Whether the remote reports that the task failed."""
        return self.status == TaskStatus.FAILED

    def to_dict(self) -> dict[str, Any]:
        """Encode as HotPlex does (``content`` and ``error`` omitted when empty)."""
        body: dict[str, Any] = {"task_id": self.task_id, "status": self.status}
        if self.content:
            body["content"] = self.content
        body["timestamp"] = format_time(self.timestamp)
        if self.error:
            body["error"] = self.error
        body["duration"] = self.duration_ns
        return body

    @classmethod
    def from_dict(cls, data: Any) -> RelayResponse:
        """Decode a JSON value; anything but a RelayResponse object raises ProtocolError."""
        if not isinstance(data, dict):
            raise ProtocolError(f"a RelayResponse must be a JSON object, not {type(data).__name__}")
        duration = data.get("duration", 0)
        if duration is None:
            duration = 0
        # bool is a subclass of int, and true is not a duration.
        if isinstance(duration, bool) or not isinstance(duration, int):
            raise ProtocolError(
                f"field 'duration' must be an integer of nanoseconds, not {duration!r}"
            )
        status = _optional_str(data, "status")
        if not status:
            raise ProtocolError("field 'status' is missing or empty")
        stamp = _optional_str(data, "timestamp")
        return cls(
            task_id=_optional_str(data, "task_id"),
            status=status,
            content=_optional_str(data, "content"),
            timestamp=_parse_time_field("timestamp", stamp) if stamp else GO_ZERO_TIME,
            error=_optional_str(data, "error"),
            duration_ns=duration,
        )

    @classmethod
    def from_body(cls, body: bytes, content_type: str = "") -> RelayResponse:
        """Decode an HTTP body; HTML pages, empty bodies and invalid JSON raise ProtocolError."""
        if not body.strip():
            raise ProtocolError("the answer body is empty")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(
                f"the answer is not valid UTF-8 (byte {exc.start})", excerpt(body)
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            kind = "an HTML page" if text.lstrip()[:1] == "<" else "not valid JSON"
            shown_type = f" ({content_type})" if content_type else ""
            raise ProtocolError(
                f"the answer is {kind}{shown_type}: {exc.msg} at char {exc.pos}", excerpt(text)
            ) from None
        try:
            return cls.from_dict(data)
        except ProtocolError as exc:
            raise ProtocolError(exc.problem, excerpt(text)) from None


@dataclass(frozen=True, slots=True)
class RelayBinding:
    """One chat's bots in HotPlex's ``bindings.json`` shape.

    ``team_id`` is our addition: HotPlex keys bindings by chat id alone, while a Slack channel id
    is only unique within its workspace. Go's JSON decoder ignores the extra field.
    """

    platform: str
    chat_id: str
    bots: dict[str, str] = field(default_factory=dict)
    team_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Encode as one entry of ``bindings.json``."""
        body: dict[str, Any] = {"platform": self.platform, "chat_id": self.chat_id}
        if self.team_id:
            body["team_id"] = self.team_id
        body["bots"] = dict(self.bots)
        return body

    @classmethod
    def from_dict(cls, data: Any) -> RelayBinding:
        """Decode one entry of ``bindings.json``."""
        if not isinstance(data, dict):
            raise ProtocolError(f"a binding must be a JSON object, not {type(data).__name__}")
        bots = data.get("bots") or {}
        if not isinstance(bots, dict) or not all(
            isinstance(name, str) and isinstance(url, str) for name, url in bots.items()
        ):
            raise ProtocolError("field 'bots' must map bot names to URL strings")
        chat_id = _optional_str(data, "chat_id")
        if not chat_id:
            raise ProtocolError("field 'chat_id' is missing or empty")
        return cls(
            platform=_optional_str(data, "platform") or "slack",
            chat_id=chat_id,
            bots=dict(bots),
            team_id=_optional_str(data, "team_id"),
        )


def _optional_str(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"field {name!r} must be a string, not {type(value).__name__}")
    return value


def _parse_time_field(name: str, text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise ProtocolError(f"field {name!r}: {exc}") from None
