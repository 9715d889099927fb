"""Sizes of each benchmark run: full (``make bench``), quick and smoke (the test suite's)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    """How many runs and how much load each scenario uses."""

    name: str
    runs: int
    ack_requests: int  # per run; every third one is a slash command, the rest are mentions
    ack_rate_per_s: float
    ack_channels: int
    ack_agent_delay_s: float
    overhead_relays: int  # per run, one at a time
    throughput_concurrency: int
    throughput_warmup_s: float
    throughput_s: float
    slow_mentions: int
    slow_agent_delay_s: float
    naive_slow_window_s: float
    rss_bindings: int
    rss_in_flight: int
    store_bindings: int
    store_bots_per_channel: int
    binds: int  # per run, one at a time
    naive: bool


FULL = Profile(
    name="full", runs=3,
    ack_requests=300, ack_rate_per_s=100.0, ack_channels=100, ack_agent_delay_s=30.0,
    overhead_relays=200,
    throughput_concurrency=100, throughput_warmup_s=2.0, throughput_s=10.0,
    slow_mentions=200, slow_agent_delay_s=2.0, naive_slow_window_s=10.0,
    rss_bindings=10_000, rss_in_flight=1_000,
    store_bindings=100_000, store_bots_per_channel=5, binds=50,
    naive=True,
)  # fmt: skip

QUICK = Profile(
    name="quick", runs=1,
    ack_requests=150, ack_rate_per_s=100.0, ack_channels=100, ack_agent_delay_s=30.0,
    overhead_relays=50,
    throughput_concurrency=100, throughput_warmup_s=1.0, throughput_s=3.0,
    slow_mentions=200, slow_agent_delay_s=2.0, naive_slow_window_s=5.0,
    rss_bindings=10_000, rss_in_flight=1_000,
    store_bindings=100_000, store_bots_per_channel=5, binds=20,
    naive=True,
)  # fmt: skip

# A few relays per scenario: proves that every scenario still runs, measures nothing.
SMOKE = Profile(
    name="smoke", runs=1,
    ack_requests=6, ack_rate_per_s=50.0, ack_channels=3, ack_agent_delay_s=30.0,
    overhead_relays=3,
    throughput_concurrency=3, throughput_warmup_s=0.1, throughput_s=0.5,
    slow_mentions=5, slow_agent_delay_s=0.2, naive_slow_window_s=2.0,
    rss_bindings=50, rss_in_flight=5,
    store_bindings=200, store_bots_per_channel=5, binds=3,
    naive=True,
)  # fmt: skip

PROFILES = {profile.name: profile for profile in (FULL, QUICK, SMOKE)}
