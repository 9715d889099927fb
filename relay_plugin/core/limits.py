"""Fair use: limits per user, channel and thread, and a concurrency cap per endpoint."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from relay_plugin.core.policy import FairUsePolicy
from relay_plugin.errors import EndpointBusyError

WINDOW_S = 60.0
# Threads whose budgets are remembered; the least recently used are forgotten beyond this. A
# loop between bots keeps its thread among the most recently used, so it stays counted.
MAX_TRACKED_THREADS = 10_000


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a relay was not started, and when it may be tried again (0: not by waiting)."""

    limit: str
    detail: str
    retry_in_s: float


@dataclass(frozen=True, slots=True)
class RelayKeys:
    """Keys that the limits count a relay by: its user, channel and thread."""

    user: str
    channel: str
    thread: str


class FairUse:
    """Count relays in flight and per minute; refuse those over a limit.

    ``acquire`` either returns a Refusal or takes a slot that ``release`` gives back. Per-minute
    windows slide: a relay counts for 60 s after it started.
    """

    def __init__(self, policy: FairUsePolicy, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._in_flight: dict[str, int] = defaultdict(int)
        self._started: dict[str, deque[float]] = defaultdict(deque)
        self._thread_counts: OrderedDict[str, int] = OrderedDict()

    def acquire(self, keys: RelayKeys) -> Refusal | None:
        """Take a slot for one relay, or return why not."""
        now = self._clock()
        policy = self._policy
        checks = (
            ("user", f"user:{keys.user}", policy.user_in_flight, policy.user_per_minute),
            ("channel", f"channel:{keys.channel}", policy.channel_in_flight,
             policy.channel_per_minute),
        )  # fmt: skip
        for scope, key, in_flight_max, per_minute_max in checks:
            if in_flight_max and self._in_flight[key] >= in_flight_max:
                return Refusal(
                    f"{scope} relays in flight",
                    f"{in_flight_max} relays for this {scope} are still running",
                    0.0,
                )
            window = self._window(key, now)
            if per_minute_max and len(window) >= per_minute_max:
                return Refusal(
                    f"{scope} relays per minute",
                    f"{per_minute_max} relays for this {scope} started in the last minute",
                    window[0] + WINDOW_S - now,
                )
        used = self._thread_counts.get(keys.thread, 0)
        if policy.thread_budget and used >= policy.thread_budget:
            return Refusal(
                "relays per thread",
                f"this thread has used its budget of {policy.thread_budget} relays; "
                "start a new thread",
                0.0,
            )
        for _, key, _, _ in checks:
            self._in_flight[key] += 1
            self._started[key].append(now)
        self._thread_counts[keys.thread] = used + 1
        self._thread_counts.move_to_end(keys.thread)
        if len(self._thread_counts) > MAX_TRACKED_THREADS:
            self._thread_counts.popitem(last=False)
        return None

    def release(self, keys: RelayKeys) -> None:
        """Give back the in-flight slots of a finished relay."""
        for key in (f"user:{keys.user}", f"channel:{keys.channel}"):
            count = self._in_flight.get(key, 0) - 1
            if count > 0:
                self._in_flight[key] = count
            else:
                self._in_flight.pop(key, None)

    def _window(self, key: str, now: float) -> deque[float]:
        window = self._started[key]
        while window and window[0] <= now - WINDOW_S:
            window.popleft()
        if not window:
            del self._started[key]
            return deque()
        return window


class EndpointGate:
    """Cap concurrent requests per endpoint; a bounded number wait, the rest are refused at once."""

    def __init__(self, concurrency: int, queue: int) -> None:
        self._concurrency = concurrency
        self._queue = queue
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._waiting: dict[str, int] = defaultdict(int)

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        """Hold one of the endpoint's slots; raises EndpointBusyError when the queue is full."""
        semaphore = self._slots.setdefault(key, asyncio.Semaphore(self._concurrency))
        if semaphore.locked():
            if self._waiting[key] >= self._queue:
                raise EndpointBusyError(
                    f"the endpoint is busy: {self._concurrency} relays running and "
                    f"{self._waiting[key]} waiting, the maximum",
                    url=key,
                )
            self._waiting[key] += 1
            try:
                await semaphore.acquire()
            finally:
                self._waiting[key] -= 1
        else:
            await semaphore.acquire()
        try:
            yield
        finally:
            semaphore.release()
