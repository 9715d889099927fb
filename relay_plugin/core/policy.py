"""Retry, timeout and circuit-breaker policy as data, in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the sender retries one relay.

    The wait before retry ``n`` (1-based) is ``base_s * 2**(n-1)`` stretched by a random factor in
    ``[1, 1 + jitter]``: with the defaults 1.0-1.1 s, 2.0-2.2 s and 4.0-4.4 s. The jitter only
    lengthens waits, so relays that failed together do not retry in lockstep and no wait is shorter
    than documented. A ``Retry-After`` from a 429 or 503 replaces the computed wait, is honoured
    exactly (no jitter) and is capped at ``retry_after_max_s``.
    """

    retries: int = 3
    base_s: float = 1.0
    jitter: float = 0.1
    retry_after_max_s: float = 30.0
    connect_timeout_s: float = 5.0
    answer_timeout_s: float = 120.0

    @property
    def max_attempts(self) -> int:
        """Attempts in all: the first one plus the retries."""
        return self.retries + 1


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When an endpoint's circuit breaker opens and for how long.

    A failure is one whole send, retries included, that ended in an endpoint failure; a 4xx
    other than 429 is the caller's fault and does not count.
    """

    failures: int = 5
    open_s: float = 30.0


@dataclass(frozen=True, slots=True)
class FairUsePolicy:
    """Limits that keep one user, channel, thread or endpoint from taking every relay slot.

    A value of 0 turns that limit off.
    """

    user_in_flight: int = 3
    user_per_minute: int = 20
    channel_in_flight: int = 10
    channel_per_minute: int = 60
    endpoint_concurrency: int = 8
    endpoint_queue: int = 100
    thread_budget: int = 50
