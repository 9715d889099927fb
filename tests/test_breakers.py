"""Circuit breakers per endpoint: opening, the single probe, what counts, and time zones."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest

from relay_plugin.core.breakers import BreakerRegistry, BreakerSnapshot
from relay_plugin.core.endpoints import endpoint_key
from relay_plugin.core.policy import BreakerPolicy
from relay_plugin.errors import CircuitOpenError, RemoteHTTPError, RemoteUnreachableError

# Breakers never contact these URLs; the operations below are local coroutines.
URL = "http://bot-a.test:9080/"
KEY = endpoint_key(URL)
POLICY = BreakerPolicy(failures=5, open_s=30.0)


class FakeClock:
    """A monotonic clock that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Operation:
    """An operation that counts its invocations and fails or succeeds as set."""

    def __init__(self, error: Exception | None = None, hold_s: float = 0.0) -> None:
        self.calls = 0
        self.error = error
        self.hold_s = hold_s

    async def __call__(self) -> str:
        self.calls += 1
        if self.hold_s:
            await asyncio.sleep(self.hold_s)
        if self.error is not None:
            raise self.error
        return "answer"


def connection_refused() -> RemoteUnreachableError:
    return RemoteUnreachableError("cannot connect: refused", url=URL, attempts=4)


async def trip(registry: BreakerRegistry, url: str = URL, times: int = 5) -> None:
    failing = Operation(connection_refused())
    for _ in range(times):
        with pytest.raises(RemoteUnreachableError):
            await registry.call(url, failing)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry(clock: FakeClock) -> BreakerRegistry:
    return BreakerRegistry(POLICY, clock=clock)


async def test_closed_below_threshold(registry: BreakerRegistry) -> None:
    await trip(registry, times=4)
    snap = registry.snapshot(URL)
    assert snap.state == "closed"
    assert snap.failures == 4


async def test_opens_after_five_failures(registry: BreakerRegistry) -> None:
    await trip(registry)
    snap = registry.snapshot(URL)
    assert snap.state == "open"
    assert snap.failures == 5
    assert snap.retry_in_s == 30.0


async def test_tripping_call_gets_original_error(registry: BreakerRegistry) -> None:
    await trip(registry, times=4)
    original = connection_refused()
    with pytest.raises(RemoteUnreachableError) as caught:
        await registry.call(URL, Operation(original))
    assert caught.value is original
    assert registry.snapshot(URL).state == "open"


async def test_open_fails_fast(registry: BreakerRegistry, clock: FakeClock) -> None:
    await trip(registry)
    clock.advance(10.0)
    operation = Operation()
    with pytest.raises(CircuitOpenError) as caught:
        await registry.call(URL, operation)
    assert operation.calls == 0
    assert caught.value.url == KEY
    assert caught.value.retry_in == pytest.approx(20.0)


async def test_single_probe_among_twenty(registry: BreakerRegistry, clock: FakeClock) -> None:
    await trip(registry)
    clock.advance(30.0)
    probe = Operation(hold_s=0.02)
    results = await asyncio.gather(
        *(registry.call(URL, probe) for _ in range(20)), return_exceptions=True
    )
    rejected = [result for result in results if isinstance(result, CircuitOpenError)]
    assert probe.calls == 1
    assert results.count("answer") == 1
    assert len(rejected) == 19


async def test_probe_success_closes(registry: BreakerRegistry, clock: FakeClock) -> None:
    await trip(registry)
    clock.advance(30.0)
    assert await registry.call(URL, Operation()) == "answer"
    snap = registry.snapshot(URL)
    assert snap.state == "closed"
    assert snap.failures == 0
    later = Operation()
    await registry.call(URL, later)
    assert later.calls == 1


async def test_probe_failure_reopens(registry: BreakerRegistry, clock: FakeClock) -> None:
    await trip(registry)
    clock.advance(30.0)
    original = connection_refused()
    with pytest.raises(RemoteUnreachableError) as caught:
        await registry.call(URL, Operation(original))
    assert caught.value is original
    snap = registry.snapshot(URL)
    assert snap.state == "open"
    assert snap.retry_in_s == 30.0
    blocked = Operation()
    with pytest.raises(CircuitOpenError):
        await registry.call(URL, blocked)
    assert blocked.calls == 0


async def test_cancelled_probe_frees_gate(registry: BreakerRegistry, clock: FakeClock) -> None:
    await trip(registry)
    clock.advance(30.0)
    stuck = asyncio.create_task(registry.call(URL, Operation(hold_s=10.0)))
    await asyncio.sleep(0.01)
    stuck.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stuck
    probe = Operation()
    assert await registry.call(URL, probe) == "answer"
    assert probe.calls == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_error_does_not_trip(registry: BreakerRegistry, status: int) -> None:
    rejected = Operation(RemoteHTTPError("bad request", url=URL, status=status))
    for _ in range(10):
        with pytest.raises(RemoteHTTPError):
            await registry.call(URL, rejected)
    snap = registry.snapshot(URL)
    assert snap.state == "closed"
    assert snap.failures == 0


async def test_client_error_resets_count(registry: BreakerRegistry) -> None:
    await trip(registry, times=4)
    with pytest.raises(RemoteHTTPError):
        await registry.call(URL, Operation(RemoteHTTPError("no", url=URL, status=400)))
    await trip(registry, times=4)
    assert registry.snapshot(URL).state == "closed"


async def test_client_error_probe_closes(registry: BreakerRegistry, clock: FakeClock) -> None:
    await trip(registry)
    clock.advance(30.0)
    with pytest.raises(RemoteHTTPError):
        await registry.call(URL, Operation(RemoteHTTPError("no", url=URL, status=404)))
    assert registry.snapshot(URL).state == "closed"


@pytest.mark.parametrize("status", [429, 500, 503, 302])
async def test_other_statuses_trip(registry: BreakerRegistry, status: int) -> None:
    failing = Operation(RemoteHTTPError("failed", url=URL, status=status))
    for _ in range(5):
        with pytest.raises(RemoteHTTPError):
            await registry.call(URL, failing)
    assert registry.snapshot(URL).state == "open"


async def test_retry_in_counts_down(registry: BreakerRegistry, clock: FakeClock) -> None:
    await trip(registry)
    clock.advance(10.0)
    assert registry.snapshot(URL).retry_in_s == pytest.approx(20.0)
    clock.advance(15.0)
    assert registry.snapshot(URL).retry_in_s == pytest.approx(5.0)
    clock.advance(5.0)
    snap = registry.snapshot(URL)
    assert snap.state == "half-open"
    assert snap.retry_in_s == 0.0


async def test_one_endpoint_two_spellings(registry: BreakerRegistry) -> None:
    await trip(registry, "HTTPS://Bots.Example.com:443/", times=3)
    await trip(registry, "https://bots.example.com/relay", times=2)
    assert registry.snapshot("https://bots.example.com").state == "open"


async def test_endpoints_are_separate(registry: BreakerRegistry) -> None:
    await trip(registry, "http://bot-a.test:9080/")
    other = Operation()
    assert await registry.call("http://bot-b.test:9080/", other) == "answer"
    assert registry.snapshot("http://bot-b.test:9080/").state == "closed"


async def test_snapshots_sorted(registry: BreakerRegistry) -> None:
    await registry.call("http://b.test/", Operation())
    await trip(registry, "http://a.test/")
    assert registry.snapshots() == [
        BreakerSnapshot(key="http://a.test/relay", state="open", failures=5, retry_in_s=30.0),
        BreakerSnapshot(key="http://b.test/relay", state="closed", failures=0, retry_in_s=0.0),
    ]


def test_unused_snapshot_closed(registry: BreakerRegistry) -> None:
    snap = registry.snapshot(URL)
    assert snap == BreakerSnapshot(key=KEY, state="closed", failures=0, retry_in_s=0.0)
    assert registry.snapshots() == []


@pytest.fixture(params=[("Asia/Shanghai", 8 * 3600), ("America/New_York", None)])
def local_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """Set the process time zone for one test and restore it afterwards."""
    zone, offset = request.param
    saved = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        gmtoff = time.localtime().tm_gmtoff
        if offset is not None:
            assert gmtoff == offset
        else:
            assert gmtoff in (-5 * 3600, -4 * 3600)
        yield zone
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


async def test_real_clock_in_zone(local_zone: str) -> None:
    registry = BreakerRegistry(BreakerPolicy(failures=5, open_s=0.2))
    await trip(registry)
    snap = registry.snapshot(URL)
    assert snap.state == "open"
    assert 0.0 < snap.retry_in_s <= 0.2
    with pytest.raises(CircuitOpenError) as caught:
        await registry.call(URL, Operation())
    assert 0.0 < caught.value.retry_in <= 0.2

    await asyncio.sleep(0.25)
    assert registry.snapshot(URL).state == "half-open"
    with pytest.raises(RemoteUnreachableError):
        await registry.call(URL, Operation(connection_refused()))
    reopened = registry.snapshot(URL)
    assert reopened.state == "open"
    assert 0.1 < reopened.retry_in_s <= 0.2

    await asyncio.sleep(0.25)
    probe = Operation(hold_s=0.02)
    results = await asyncio.gather(
        *(registry.call(URL, probe) for _ in range(5)), return_exceptions=True
    )
    assert probe.calls == 1
    assert results.count("answer") == 1
    assert registry.snapshot(URL).state == "closed"
