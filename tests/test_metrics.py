"""Prometheus metrics: outcome labels, the breaker gauge, Slack API errors, and GET /metrics."""

import socket

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from harness import running_stack
from relay_plugin.core.breakers import BreakerRegistry
from relay_plugin.core.metrics import RelayMetrics, outcome_of
from relay_plugin.core.policy import BreakerPolicy
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
from relay_plugin.metrics import SlackErrorCounter
from relay_plugin.tools.simulator import SlackSimulator

URL = "http://bots.example/relay"


def sample(text: str, name: str, **labels: str) -> float | None:
    """Return the value of one sample of a Prometheus text exposition, or None if absent."""
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name and all(item.labels.get(k) == v for k, v in labels.items()):
                return item.value
    return None


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (CircuitOpenError(url=URL, retry_in=5.0), "circuit_open"),
        (EndpointBusyError("busy", url=URL), "busy"),
        (TargetBlockedError("blocked", url=URL), "blocked"),
        (RemoteTimeoutError("slow", url=URL), "timeout"),
        (RemoteUnreachableError("down", url=URL), "unreachable"),
        (RemoteHTTPError("HTTP 500", url=URL, status=500), "http_error"),
        (BadAnswerError("not JSON", url=URL), "bad_answer"),
        (RemoteTaskError("the task failed", url=URL), "failed"),
        (ValueError("unexpected"), "error"),
    ],
)
def test_outcome_labels(error, outcome):
    assert outcome_of(error) == outcome


def test_relay_counters_and_latency():
    metrics = RelayMetrics()
    metrics.relay_finished("echo", "completed", attempts=3, elapsed_s=0.2)
    metrics.relay_finished("echo", "circuit_open", attempts=0, elapsed_s=0.0)
    text = metrics.exposition().decode()
    assert sample(text, "relay_plugin_relays_total", bot="echo", outcome="completed") == 1
    assert sample(text, "relay_plugin_relays_total", bot="echo", outcome="circuit_open") == 1
    assert sample(text, "relay_plugin_relay_retries_total", bot="echo") == 2
    # A relay that sent nothing has no latency to count.
    assert sample(text, "relay_plugin_relay_duration_seconds_count", bot="echo") == 1
    assert sample(text, "relay_plugin_relay_duration_seconds_bucket", bot="echo", le="0.25") == 1


def test_registries_are_separate():
    first, second = RelayMetrics(), RelayMetrics()
    first.relay_finished("echo", "completed", attempts=1, elapsed_s=0.1)
    text = second.exposition().decode()
    assert sample(text, "relay_plugin_relays_total", bot="echo", outcome="completed") is None


async def test_breaker_state_read_at_scrape():
    breakers = BreakerRegistry(BreakerPolicy(failures=1, open_s=60.0))
    metrics = RelayMetrics()
    metrics.watch_breakers(breakers)

    async def fail() -> None:
        raise RemoteUnreachableError("down", url=URL)

    async def succeed() -> str:
        return "ok"

    await breakers.call("http://up.example", succeed)
    before = metrics.exposition().decode()
    with pytest.raises(RemoteUnreachableError):
        await breakers.call(URL, fail)
    after = metrics.exposition().decode()
    assert sample(before, "relay_plugin_breaker_state", endpoint="http://up.example/relay") == 0
    assert sample(before, "relay_plugin_breaker_state", endpoint=URL) is None
    assert sample(after, "relay_plugin_breaker_state", endpoint=URL) == 1
    assert sample(after, "relay_plugin_breaker_consecutive_failures", endpoint=URL) == 1


async def test_slack_errors_counted_by_method():
    metrics = RelayMetrics()
    async with SlackSimulator() as sim:
        client = AsyncWebClient(
            token=sim.bot_token, base_url=sim.api_url, retry_handlers=[SlackErrorCounter(metrics)]
        )
        sim.fail_next("chat.postMessage", "not_in_channel")
        with pytest.raises(SlackApiError):
            await client.chat_postMessage(channel="C0001", text="hello")
        await client.chat_postMessage(channel="C0001", text="hello")
    text = metrics.exposition().decode()
    labels = {"method": "chat.postMessage", "error": "not_in_channel"}
    # The second call succeeded, so the count stays at one.
    assert sample(text, "relay_plugin_slack_api_errors_total", **labels) == 1


async def test_slack_retried_call_counted_once():
    metrics = RelayMetrics()
    async with SlackSimulator() as sim:
        client = AsyncWebClient(
            token=sim.bot_token,
            base_url=sim.api_url,
            retry_handlers=[
                AsyncRateLimitErrorRetryHandler(max_retry_count=1),
                SlackErrorCounter(metrics),
            ],
        )
        sim.fail_next("users.info", status=429, retry_after=0, times=2)
        with pytest.raises(SlackApiError):
            await client.users_info(user="U0001")
    text = metrics.exposition().decode()
    assert sample(text, "relay_plugin_slack_api_errors_total", method="users.info",
                  error="ratelimited") == 1  # fmt: skip


async def test_slack_unreachable_counted():
    metrics = RelayMetrics()
    client = AsyncWebClient(
        token="xoxb-test",
        base_url=f"http://127.0.0.1:{closed_port()}/api/",
        retry_handlers=[SlackErrorCounter(metrics)],
    )
    with pytest.raises(aiohttp.ClientError):
        await client.auth_test()
    text = metrics.exposition().decode()
    assert sample(text, "relay_plugin_slack_api_errors_total", method="auth.test",
                  error="ClientConnectorError") == 1  # fmt: skip


async def scrape(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/metrics") as response:
            return response.status, response.headers["Content-Type"], await response.text()


async def test_serve_metrics_count_relays(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        await stack.command(f"bind echo {stack.agent_url}")
        down = f"http://127.0.0.1:{closed_port()}"
        await stack.command(f"bind down {down}")
        event = await stack.mention("echo hello")
        await stack.final_replies("C0001", event["ts"])
        event = await stack.mention("down hello")
        await stack.final_replies("C0001", event["ts"])
        status, content_type, text = await scrape(stack.app.url)
    assert status == 200
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert sample(text, "relay_plugin_relays_total", bot="echo", outcome="completed") == 1
    assert sample(text, "relay_plugin_relays_total", bot="down", outcome="unreachable") == 1
    assert sample(text, "relay_plugin_relay_duration_seconds_count", bot="echo") == 1
    assert sample(text, "relay_plugin_relay_duration_seconds_count", bot="down") == 1
    # RELAY_RETRIES defaults to 3: four attempts to the closed port.
    assert sample(text, "relay_plugin_relay_retries_total", bot="down") == 3
    assert sample(text, "relay_plugin_relay_retries_total", bot="echo") is None
    assert sample(text, "relay_plugin_breaker_state", endpoint=f"{down}/relay") == 0
    assert sample(text, "relay_plugin_breaker_consecutive_failures",
                  endpoint=f"{down}/relay") == 1  # fmt: skip


async def test_serve_metrics_count_slack_errors(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        await stack.command(f"bind echo {stack.agent_url}")
        stack.sim.fail_next("chat.update", "cant_update_message")
        event = await stack.mention("echo hello")
        await stack.final_replies("C0001", event["ts"])
        _, _, text = await scrape(stack.app.url)
    assert sample(text, "relay_plugin_slack_api_errors_total", method="chat.update",
                  error="cant_update_message") == 1  # fmt: skip
    assert sample(text, "relay_plugin_relays_total", bot="echo", outcome="completed") == 1


async def test_serve_metrics_count_refused(tmp_path):
    async with running_stack(tmp_path / "data", RELAY_THREAD_BUDGET="1") as stack:
        await stack.command(f"bind echo {stack.agent_url}")
        first = await stack.mention("echo one")
        await stack.final_replies("C0001", first["ts"])
        await stack.mention("echo two", thread_ts=first["ts"])
        await stack.final_replies("C0001", first["ts"], count=2)
        _, _, text = await scrape(stack.app.url)
    assert sample(text, "relay_plugin_relays_total", bot="echo", outcome="completed") == 1
    assert sample(text, "relay_plugin_relays_total", bot="echo", outcome="refused") == 1
    # A refused relay was never sent, so only the first one has a latency.
    assert sample(text, "relay_plugin_relay_duration_seconds_count", bot="echo") == 1
