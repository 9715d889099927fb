"""Authentication of task reports that a remote posts to the callback endpoint.

A report is signed like Slack's requests: ``X-Relay-Timestamp: <unix seconds>`` and
``X-Relay-Signature: v0=<hex HMAC-SHA256 of "v0:<timestamp>:<body>">``, keyed with the bot's
token (its per-bot token, or RELAY_TOKEN). ``Authorization: Bearer <token>`` is the simple
option. Signatures older than five minutes are rejected, so a captured report cannot be replayed
later.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

MAX_AGE_S = 300
TIMESTAMP_HEADER = "X-Relay-Timestamp"
SIGNATURE_HEADER = "X-Relay-Signature"


def sign(key: str, timestamp: int | str, body: bytes) -> str:
    """Return the ``v0=`` signature of ``body`` sent at ``timestamp``."""
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(key.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(key: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """Return the headers that sign ``body`` with ``key``."""
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(key, timestamp, body)}


def verify(key: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> str:
    """Return "" when the request is authentic, else the reason it is not."""
    if not key:
        return "no token is set for this bot, so its reports cannot be checked"
    bearer = headers.get("Authorization", "")
    if bearer:
        if hmac.compare_digest(bearer.encode(), f"Bearer {key}".encode()):
            return ""
        return "wrong bearer token"
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    signature = headers.get(SIGNATURE_HEADER, "")
    if not timestamp.isdigit() or not signature:
        return f"missing {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} (or Authorization) headers"
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > MAX_AGE_S:
        return f"{TIMESTAMP_HEADER} is more than {MAX_AGE_S} s away from now"
    if not hmac.compare_digest(signature.encode(), sign(key, timestamp, body).encode()):
        return "wrong signature"
    return ""
