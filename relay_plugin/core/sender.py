"""HTTP sender of relay messages: one POST per attempt, retried per RetryPolicy with ``backoff``.

A retry is safe when the request cannot have run the task (connection refused, DNS failure,
connect timeout, 429, 502, 503, 504). Otherwise the request reached the remote and the task may
have run, and HotPlex receivers do not drop repeats, so such failures (answer timeout, a
disconnect after sending, 500 and other 5xx) are retried only when the caller sets ``dedupe``.
Other 4xx, 3xx and 2xx answers that are not a RelayResponse are never retried, and neither is a
target that the TargetGuard blocks.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import json
import logging
import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import backoff

from relay_plugin import __version__
from relay_plugin.core import endpoints
from relay_plugin.core.guard import GuardedResolver, TargetGuard
from relay_plugin.core.policy import RetryPolicy
from relay_plugin.core.protocol import RelayMessage, RelayResponse, excerpt
from relay_plugin.errors import (
    BadAnswerError,
    InvalidBindingError,
    ProtocolError,
    RelayError,
    RemoteHTTPError,
    RemoteTimeoutError,
    RemoteUnreachableError,
    TargetBlockedError,
    TargetNotAllowedError,
)

logger = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 4 * 1024 * 1024
# An error body is read only for its excerpt, so a small prefix is enough.
_ERROR_READ_BYTES = 64 * 1024
_CHUNK_BYTES = 64 * 1024
_RETRY_AFTER_STATUSES = frozenset({429, 503})
_SAFE_STATUSES = frozenset({429, 502, 503, 504})


def new_client_session(
    policy: RetryPolicy, *, guard: TargetGuard | None = None
) -> aiohttp.ClientSession:
    """Create the HTTP session for relays. Call it in a running event loop and close it at exit.

    With ``guard``, host names resolve through a GuardedResolver with the DNS cache off, so each
    connection goes to an address checked for it. Give the RelaySender the same guard, because
    it checks IP-literal hosts, which aiohttp does not resolve.
    """
    # force_close: a fresh connection per request. A reused keep-alive connection that the
    # remote has just closed fails as a disconnect after sending, which is not safe to retry.
    # limit=0: aiohttp's default of 100 connections would cap relays in flight whatever the
    # per-endpoint gate allows, and a relay waiting for a pooled connection would count that
    # wait against its connect timeout.
    if guard is None:
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
    else:
        connector = aiohttp.TCPConnector(
            force_close=True, limit=0, resolver=GuardedResolver(guard), use_dns_cache=False
        )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=_client_timeout(policy),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def _client_timeout(policy: RetryPolicy) -> aiohttp.ClientTimeout:
    # connect: the whole connect phase (waiting for a pooled connection, DNS, TCP and TLS).
    # sock_read: the wait for the answer once the request is sent, restarted by each chunk
    # read. total stays unset because RelaySender caps each attempt with its own deadline.
    return aiohttp.ClientTimeout(
        total=None, connect=policy.connect_timeout_s, sock_read=policy.answer_timeout_s
    )


@dataclass(frozen=True, slots=True)
class SendResult:
    """A relay that the remote answered with a RelayResponse."""

    response: RelayResponse
    attempts: int
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class RetryWait:
    """One wait before a retry, as passed to the ``on_wait`` hook of RelaySender."""

    url: str
    attempt: int
    delay_s: float
    reason: str


class _Retry(enum.Enum):
    NEVER = "never"
    SAFE = "safe"  # the request cannot have run the task
    IF_DEDUPE = "if-dedupe"  # the request reached the remote and the task may have run


class _AttemptFailed(Exception):
    """One failed attempt: the error the caller will see, and whether a retry may follow."""

    def __init__(self, error: RelayError, retry: _Retry, retry_after: float | None = None) -> None:
        super().__init__(error.args[0])
        self.error = error
        self.retry = retry
        self.retry_after = retry_after

    def retryable(self, dedupe: bool) -> bool:
        return self.retry is _Retry.SAFE or (self.retry is _Retry.IF_DEDUPE and dedupe)


class RelaySender:
    """Posts RelayMessages to remote bots and decodes their answers.

    ``max_answer_bytes`` bounds a 2xx body, and a longer one raises BadAnswerError. ``on_wait`` is
    called with a RetryWait before each wait between attempts, and its exceptions propagate.
    ``guard`` checks IP-literal hosts before sending, and the session's resolver checks host
    names (see new_client_session). A blocked target raises TargetBlockedError at once.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        policy: RetryPolicy,
        *,
        default_token: str = "",
        user_agent: str = f"relay-plugin/{__version__}",
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        on_wait: Callable[[RetryWait], object] | None = None,
        guard: TargetGuard | None = None,
    ) -> None:
        if policy.retries < 0:
            raise ValueError(f"policy.retries is {policy.retries}; it must be 0 or more")
        if max_answer_bytes < 1:
            raise ValueError(f"max_answer_bytes is {max_answer_bytes}; it must be at least 1")
        self._session = session
        self._policy = policy
        self._default_token = default_token
        self._user_agent = user_agent
        self._max_answer_bytes = max_answer_bytes
        self._on_wait = on_wait
        self._guard = guard
        self._rng = random.Random()
        self._timeout = _client_timeout(policy)
        # Connecting is bounded by connect_timeout_s, so this deadline only ends an answer
        # that keeps trickling in after sock_read alone would have let it continue.
        self._attempt_deadline_s = policy.connect_timeout_s + policy.answer_timeout_s

    def __repr__(self) -> str:
        return f"RelaySender(policy={self._policy!r})"

    async def send(
        self,
        message: RelayMessage,
        url: str,
        *,
        token: str = "",
        dedupe: bool = False,
        retries: bool = True,
        on_wait: Callable[[RetryWait], object] | None = None,
    ) -> SendResult:
        """Post ``message`` to ``url`` with retries per policy; raise RelayError if it fails.

        ``retries=False`` makes one attempt only. ``on_wait`` is called before each retry wait
        of this send, after the sender's own hook.
        """
        target = endpoints.relay_url(url)
        parts = urlsplit(target)
        if parts.username is not None or parts.password is not None:
            # aiohttp would turn them into Basic auth, which clashes with the bearer token,
            # and the password would show in errors and logs.
            shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
            raise RemoteUnreachableError(
                "the bot URL contains credentials (user:password@host); remove them and "
                "set a bearer token instead",
                url=shown,
            )
        if self._guard is not None:
            try:
                self._guard.check_url(target)
            except InvalidBindingError as exc:
                # A scheme other than http(s), or an IP-literal host that is not allowed.
                raise TargetBlockedError(f"blocked: {exc.problem}", url=target) from None
        body = json.dumps(message.to_dict(), separators=(",", ":")).encode("utf-8")
        headers = self._headers(message, token or self._default_token)
        started = time.monotonic()
        attempts = 0

        async def attempt() -> RelayResponse:
            nonlocal attempts
            attempts += 1
            return await self._attempt(target, body, headers)

        retrying = backoff.on_exception(
            functools.partial(_retry_waits, self._policy, self._rng),
            _AttemptFailed,
            max_tries=self._policy.max_attempts if retries else 1,
            jitter=None,  # the waits carry their own jitter, and Retry-After must stay exact
            giveup=lambda failure: not failure.retryable(dedupe),
            on_backoff=functools.partial(self._log_wait, target, on_wait),
            on_giveup=functools.partial(self._log_giveup, target, dedupe),
            logger=None,
        )(attempt)

        try:
            response = await retrying()
        except _AttemptFailed as failure:
            error = failure.error
        else:
            return SendResult(response, attempts, time.monotonic() - started)
        error.attempts = attempts
        # Raised outside the except block so the private _AttemptFailed is not its context.
        raise error

    def _headers(self, message: RelayMessage, token: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": self._user_agent}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if message.task_id:
            headers["Idempotency-Key"] = message.task_id
        return headers

    async def _attempt(self, url: str, body: bytes, headers: dict[str, str]) -> RelayResponse:
        try:
            async with asyncio.timeout(self._attempt_deadline_s):
                async with self._session.post(
                    url, data=body, headers=headers, allow_redirects=False, timeout=self._timeout
                ) as response:
                    return await self._read_answer(url, response)
        except TargetNotAllowedError as exc:
            # GuardedResolver found no allowed address, so nothing was sent. A retry cannot help.
            message = f"blocked: {exc.problem}"
            raise _failure(TargetBlockedError, message, url, exc, _Retry.NEVER) from None
        except aiohttp.ConnectionTimeoutError as exc:
            message = f"connecting timed out after {self._policy.connect_timeout_s:g} s"
            raise _failure(RemoteTimeoutError, message, url, exc, _Retry.SAFE) from None
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientConnectorSSLError) as exc:
            # A certificate or TLS setup problem does not go away within a few seconds.
            message = f"the TLS handshake failed: {exc}"
            raise _failure(RemoteUnreachableError, message, url, exc, _Retry.NEVER) from None
        except aiohttp.ClientConnectorDNSError as exc:
            message = f"cannot resolve the host name: {exc.os_error}"
            raise _failure(RemoteUnreachableError, message, url, exc, _Retry.SAFE) from None
        except aiohttp.ClientConnectorError as exc:
            message = f"cannot connect: {exc.os_error}"
            raise _failure(RemoteUnreachableError, message, url, exc, _Retry.SAFE) from None
        except TimeoutError as exc:
            # aiohttp's SocketTimeoutError (sock_read) or the attempt deadline above.
            message = f"the answer timed out after {self._policy.answer_timeout_s:g} s"
            raise _failure(RemoteTimeoutError, message, url, exc, _Retry.IF_DEDUPE) from None
        except aiohttp.ServerDisconnectedError as exc:
            message = "the remote closed the connection before answering"
            raise _failure(RemoteUnreachableError, message, url, exc, _Retry.IF_DEDUPE) from None
        except aiohttp.ClientPayloadError as exc:
            message = f"the answer was cut off: {exc}"
            raise _failure(RemoteUnreachableError, message, url, exc, _Retry.IF_DEDUPE) from None
        except aiohttp.InvalidURL as exc:
            message = f"the URL cannot be requested: {exc}"
            raise _failure(RemoteUnreachableError, message, url, exc, _Retry.NEVER) from None
        except aiohttp.ClientError as exc:
            # Connection resets and other transport errors after the connection was made.
            message = f"the connection failed: {exc!r}"
            raise _failure(RemoteUnreachableError, message, url, exc, _Retry.IF_DEDUPE) from None

    async def _read_answer(self, url: str, response: aiohttp.ClientResponse) -> RelayResponse:
        status = response.status
        if 200 <= status < 300:
            body, complete = await _read_bounded(response, self._max_answer_bytes)
            if not complete:
                message = f"answer too large: over {self._max_answer_bytes} bytes"
                error = BadAnswerError(message, url=url, status=status, excerpt=excerpt(body))
                raise _AttemptFailed(error, _Retry.NEVER)
            try:
                return RelayResponse.from_body(body, response.content_type)
            except ProtocolError as exc:
                error = BadAnswerError(
                    f"invalid RelayResponse: {exc.problem}",
                    url=url,
                    status=status,
                    excerpt=exc.excerpt or excerpt(body),
                )
                raise _AttemptFailed(error, _Retry.NEVER) from None

        body, _ = await _read_bounded(response, _ERROR_READ_BYTES)
        error = RemoteHTTPError(
            _status_problem(response), url=url, status=status, excerpt=_error_text(body)
        )
        if status in _SAFE_STATUSES:
            retry = _Retry.SAFE
        elif status >= 500:
            retry = _Retry.IF_DEDUPE
        else:
            retry = _Retry.NEVER
        retry_after = None
        if status in _RETRY_AFTER_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After", ""))
        raise _AttemptFailed(error, retry, retry_after)

    def _log_wait(
        self, url: str, on_wait: Callable[[RetryWait], object] | None, details: dict[str, Any]
    ) -> None:
        failure: _AttemptFailed = details["exception"]
        wait = RetryWait(url, details["tries"], details["wait"], failure.error.args[0])
        logger.debug(
            "relay to %s: attempt %d failed (%s); retrying in %.3f s",
            wait.url, wait.attempt, wait.reason, wait.delay_s,
        )  # fmt: skip
        if self._on_wait is not None:
            self._on_wait(wait)
        if on_wait is not None:
            on_wait(wait)

    def _log_giveup(self, url: str, dedupe: bool, details: dict[str, Any]) -> None:
        failure: _AttemptFailed = details["exception"]
        if failure.retryable(dedupe):
            logger.warning(
                "relay to %s failed after %d attempt(s); giving up: %s",
                url, details["tries"], failure.error.args[0],
            )  # fmt: skip


def _error_text(body: bytes) -> str:
    """Return the ``error`` field of a JSON error body (HotPlex's and ours), else its start."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return excerpt(body)
    if isinstance(data, dict) and isinstance(data.get("error"), str) and data["error"]:
        return excerpt(data["error"])
    return excerpt(body)


def _failure(
    kind: type[RelayError], message: str, url: str, cause: BaseException, retry: _Retry
) -> _AttemptFailed:
    error = kind(message, url=url)
    error.__cause__ = cause
    return _AttemptFailed(error, retry)


def _status_problem(response: aiohttp.ClientResponse) -> str:
    text = f"the remote answered HTTP {response.status} {response.reason or ''}".rstrip()
    if 300 <= response.status < 400:
        location = response.headers.get("Location", "")
        text += f" (a redirect to {location!r}; bind the final URL instead)"
    return text


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """Read at most ``limit`` bytes of the body. The flag is False when the body was longer."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], False
    return b"".join(chunks), True


def parse_retry_after(value: str, now: datetime | None = None) -> float | None:
    """Parse a Retry-After header (seconds or an HTTP date) into seconds, or None when invalid."""
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # float() also accepts "nan" and "inf", which are not delays.
        return seconds if 0 <= seconds < float("inf") else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now or datetime.now(timezone.utc)
    return max(0.0, (when - current).total_seconds())


def _retry_waits(
    policy: RetryPolicy, rng: random.Random
) -> Generator[float | None, _AttemptFailed, None]:
    """Yield the wait before each retry; backoff sends in the failure that the wait follows."""
    failure = yield None
    retry = 0
    while True:
        retry += 1
        if failure.retry_after is not None:
            delay = min(failure.retry_after, policy.retry_after_max_s)
        else:
            delay = policy.base_s * 2 ** (retry - 1) * rng.uniform(1.0, 1.0 + policy.jitter)
        failure = yield delay
