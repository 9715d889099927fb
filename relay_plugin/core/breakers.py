"""Circuit breakers, one per endpoint, built on aiobreaker's state machine.

A breaker opens after ``policy.failures`` consecutive failed sends, rejects calls for
``policy.open_s`` seconds, then half-opens and admits exactly one probe while other calls are
rejected. The probe's success closes it, and its failure opens it for another ``open_s``.

What counts: every exception from the operation is a failure, except a RemoteHTTPError with a
4xx status other than 429. That one is the caller's fault, and it proves the endpoint is up and
answering, so it counts as a success: it resets the failure count and a probe that gets it
closes the breaker.

aiobreaker 1.2.0 supplies the failure count and the closed, open and half-open transitions.
Three parts of it are bypassed. Its half-open state lets every concurrent call through, so a
probe gate admits one. It stores ``utcnow()`` but compares with the local ``now()``, so the
open period and "retry in" are measured here with a monotonic clock. Its CircuitBreakerError
never reaches callers: they get the original error or CircuitOpenError.

A call that started before its breaker opened and ends after it still updates aiobreaker: a
late failure restarts the open period, and a late success resets the failure count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TypeVar

from aiobreaker import CircuitBreaker, CircuitBreakerError, CircuitBreakerListener
from aiobreaker.state import CircuitBreakerBaseState, CircuitBreakerState

from relay_plugin.core.endpoints import endpoint_key
from relay_plugin.core.policy import BreakerPolicy
from relay_plugin.errors import CircuitOpenError, RemoteHTTPError, TargetBlockedError

logger = logging.getLogger(__name__)

T = TypeVar("T")

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """The state of one endpoint's breaker at one moment."""

    key: str
    state: str  # "closed" | "open" | "half-open"
    failures: int  # consecutive failures
    retry_in_s: float  # seconds until it half-opens (0 when closed or half-open)


def is_endpoint_failure(error: BaseException) -> bool:
    """Return whether ``error`` counts against the endpoint.

    A 4xx other than 429 and a target blocked by the address guard do not count: neither says
    anything about the endpoint's health.
    """
    if isinstance(error, TargetBlockedError):
        return False
    if isinstance(error, RemoteHTTPError) and error.status is not None:
        return not (400 <= error.status < 500 and error.status != 429)
    return True


class _Breaker(CircuitBreaker):
    def open(self) -> None:
        # aiobreaker 1.2.0 stamps opened_at with datetime.utcnow(), which Python 3.12
        # deprecates. This stamps the same naive UTC time without the warning.
        self._state_storage.opened_at = datetime.now(timezone.utc).replace(tzinfo=None)
        self.state = self._state_storage.state = CircuitBreakerState.OPEN


class _Endpoint(CircuitBreakerListener):
    """One endpoint's aiobreaker breaker, its opening time, and its probe gate."""

    def __init__(self, key: str, policy: BreakerPolicy, clock: Callable[[], float]) -> None:
        self.key = key
        self.open_s = policy.open_s
        self.clock = clock
        self.opened_at = 0.0
        self.probing = False
        # timeout_duration keeps its default and is never consulted, because a call reaches
        # aiobreaker only when it is closed or half-open.
        self.breaker = _Breaker(
            fail_max=policy.failures,
            exclude=[lambda error: not is_endpoint_failure(error)],
            listeners=[self],
            name=key,
        )

    def state_change(
        self,
        breaker: CircuitBreaker,
        old: CircuitBreakerBaseState | None,
        new: CircuitBreakerBaseState,
    ) -> None:
        """Record when the breaker opens, by the injected clock, and log each transition."""
        previous = old.state if old is not None else None
        if new.state is CircuitBreakerState.OPEN:
            self.opened_at = self.clock()
            if previous is CircuitBreakerState.CLOSED:
                logger.warning(
                    "circuit breaker for %s opened after %d consecutive failures; "
                    "calls are rejected for %g s",
                    self.key, breaker.fail_counter, self.open_s,
                )  # fmt: skip
            elif previous is CircuitBreakerState.HALF_OPEN:
                logger.warning(
                    "circuit breaker for %s: the probe failed; open again for %g s",
                    self.key, self.open_s,
                )  # fmt: skip
            else:
                logger.debug(
                    "circuit breaker for %s: a call started before it opened failed; "
                    "the open period restarts",
                    self.key,
                )  # fmt: skip
        elif new.state is CircuitBreakerState.HALF_OPEN:
            logger.info("circuit breaker for %s half-open: admitting one probe", self.key)
        elif previous is not None and previous is not CircuitBreakerState.CLOSED:
            logger.info("circuit breaker for %s closed: the probe succeeded", self.key)


class BreakerRegistry:
    """Circuit breakers keyed by endpoint (normalized relay URL), created on first use."""

    def __init__(
        self, policy: BreakerPolicy, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if policy.failures < 1:
            raise ValueError(f"policy.failures is {policy.failures}; it must be at least 1")
        self._policy = policy
        self._clock = clock
        self._endpoints: dict[str, _Endpoint] = {}

    async def call(self, url: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation`` through the breaker of ``url``; raise CircuitOpenError when open."""
        endpoint = self._endpoint(endpoint_key(url))
        state = endpoint.breaker.current_state

        if state is CircuitBreakerState.OPEN:
            retry_in = self._retry_in(endpoint)
            if retry_in > 0:
                raise CircuitOpenError(url=endpoint.key, retry_in=retry_in)
            endpoint.breaker.half_open()
            state = CircuitBreakerState.HALF_OPEN

        if state is CircuitBreakerState.HALF_OPEN:
            if endpoint.probing:
                # NOTE: the probe's remaining time is unknown, so the wait reported is 0 s.
                raise CircuitOpenError(url=endpoint.key, retry_in=0.0)
            endpoint.probing = True
            try:
                return await self._run(endpoint, operation)
            finally:
                endpoint.probing = False

        return await self._run(endpoint, operation)

    def snapshot(self, url: str) -> BreakerSnapshot:
        """Return the state of the breaker of ``url`` (closed with no failures if never used)."""
        key = endpoint_key(url)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            return BreakerSnapshot(key=key, state=CLOSED, failures=0, retry_in_s=0.0)
        return self._snapshot(endpoint)

    def snapshots(self) -> list[BreakerSnapshot]:
        """Return the state of every breaker used so far, sorted by key."""
        return [self._snapshot(self._endpoints[key]) for key in sorted(self._endpoints)]

    def _endpoint(self, key: str) -> _Endpoint:
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = _Endpoint(key, self._policy, self._clock)
            self._endpoints[key] = endpoint
        return endpoint

    def _retry_in(self, endpoint: _Endpoint) -> float:
        return max(0.0, endpoint.opened_at + self._policy.open_s - self._clock())

    def _snapshot(self, endpoint: _Endpoint) -> BreakerSnapshot:
        state = endpoint.breaker.current_state
        retry_in = 0.0
        if state is CircuitBreakerState.OPEN:
            retry_in = self._retry_in(endpoint)
            # Once the open period is over, the next call is a probe.
            name = OPEN if retry_in > 0 else HALF_OPEN
        elif state is CircuitBreakerState.HALF_OPEN:
            name = HALF_OPEN
        else:
            name = CLOSED
        return BreakerSnapshot(
            key=endpoint.key,
            state=name,
            failures=endpoint.breaker.fail_counter,
            retry_in_s=retry_in,
        )

    async def _run(self, endpoint: _Endpoint, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await endpoint.breaker.call_async(operation)
        except CircuitBreakerError as exc:
            # aiobreaker raises this when this call's failure opened the breaker, with the
            # operation's own error as the cause.
            original = exc.__cause__
        if not isinstance(original, Exception):
            raise CircuitOpenError(url=endpoint.key, retry_in=self._retry_in(endpoint))
        # Raised outside the except block so CircuitBreakerError is not its context.
        raise original
