"""Prometheus metrics of relays, circuit breakers and Slack API calls, one registry per app.

Each RelayMetrics owns its CollectorRegistry instead of using prometheus_client's global one,
so several apps in one process (as in tests) count separately. Labels are bot names, endpoints,
outcomes, and Slack method and error names: sets that admins and Slack control. User, channel
and task ids never become labels, because each would add a time series per value.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay_plugin.core.breakers import CLOSED, HALF_OPEN, OPEN, BreakerRegistry
from relay_plugin.errors import (
    BadAnswerError,
    CircuitOpenError,
    EndpointBusyError,
    RemoteHTTPError,
    RemoteTaskError,
    RemoteTimeoutError,
    RemoteUnreachableError,
    TargetBlockedError,
)

# generate_latest writes the classic text format, version 0.0.4, which every Prometheus reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

COMPLETED = "completed"
ACCEPTED = "accepted"
FAILED = "failed"
REFUSED = "refused"
CANCELLED = "cancelled"
OTHER = "error"
# Checked in order, so a subclass must come before its base class.
_ERROR_OUTCOMES: tuple[tuple[type[Exception], str], ...] = (
    (CircuitOpenError, "circuit_open"),
    (EndpointBusyError, "busy"),
    (TargetBlockedError, "blocked"),
    (RemoteTimeoutError, "timeout"),
    (RemoteUnreachableError, "unreachable"),
    (RemoteHTTPError, "http_error"),
    (BadAnswerError, "bad_answer"),
    (RemoteTaskError, FAILED),
)
BREAKER_STATE_VALUES = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}
# Seconds. An agent may take from a fraction of a second up to the default answer timeout of
# 120 s, and retries add their waits on top of that.
LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def outcome_of(error: BaseException) -> str:
    """Return the ``outcome`` label of a relay that ended with ``error``."""
    for kind, outcome in _ERROR_OUTCOMES:
        if isinstance(error, kind):
            return outcome
    return OTHER


class RelayMetrics:
    """The app's counters and histograms, and its Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._relays = Counter(
            "relay_plugin_relays",
            "Relays that finished, by bot and outcome (completed, failed, timeout, unreachable, "
            "http_error, bad_answer, circuit_open, busy, blocked, refused, cancelled, error).",
            ["bot", "outcome"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "relay_plugin_relay_duration_seconds",
            "Time from the start of a relay to its answer or final error, for relays sent at "
            "least once; waiting for an endpoint slot and retries are included.",
            ["bot"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._retries = Counter(
            "relay_plugin_relay_retries",
            "Attempts after the first one, by bot.",
            ["bot"],
            registry=self.registry,
        )
        self._slack_errors = Counter(
            "relay_plugin_slack_api_errors",
            "Slack Web API calls that failed, by method and Slack's error code (or the "
            "exception type when no answer arrived).",
            ["method", "error"],
            registry=self.registry,
        )

    def watch_breakers(self, breakers: BreakerRegistry) -> None:
        """Export the state of every breaker in ``breakers``, read at each scrape."""
        self.registry.register(_BreakerCollector(breakers))

    def relay_finished(
        self, bot: str, outcome: str, *, attempts: int, elapsed_s: float | None
    ) -> None:
        """Count one finished relay; its latency counts only when it was sent at least once."""
        self._relays.labels(bot=bot, outcome=outcome).inc()
        if attempts > 1:
            self._retries.labels(bot=bot).inc(attempts - 1)
        if attempts > 0 and elapsed_s is not None:
            self._latency.labels(bot=bot).observe(elapsed_s)

    def slack_api_error(self, method: str, error: str) -> None:
        """Count one failed Slack Web API call."""
        self._slack_errors.labels(method=method, error=error).inc()

    def exposition(self) -> bytes:
        """Return every metric in the Prometheus text format (see CONTENT_TYPE)."""
        return generate_latest(self.registry)


class _BreakerCollector(Collector):
    """Reads BreakerRegistry.snapshots() when Prometheus scrapes, so the states are current."""

    def __init__(self, breakers: BreakerRegistry) -> None:
        self._breakers = breakers

    def describe(self) -> Iterable[Metric]:
        # Declaring no names up front keeps registration from running a collection.
        return []

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "relay_plugin_breaker_state",
            "Circuit breaker state per endpoint: 0 closed, 1 open, 2 half-open.",
            labels=["endpoint"],
        )
        failures = GaugeMetricFamily(
            "relay_plugin_breaker_consecutive_failures",
            "Failed sends in a row counted by each endpoint's circuit breaker.",
            labels=["endpoint"],
        )
        for snapshot in self._breakers.snapshots():
            state.add_metric([snapshot.key], BREAKER_STATE_VALUES[snapshot.state])
            failures.add_metric([snapshot.key], snapshot.failures)
        yield state
        yield failures
