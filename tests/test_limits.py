import asyncio

import pytest

from relay_plugin.core.limits import EndpointGate, FairUse, RelayKeys
from relay_plugin.core.policy import FairUsePolicy
from relay_plugin.errors import EndpointBusyError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def keys(user="T:U1", channel="T:C1", thread="T:C1:1.0"):
    return RelayKeys(user=user, channel=channel, thread=thread)


def limited(**fields):
    base = dict(user_in_flight=0, user_per_minute=0, channel_in_flight=0, channel_per_minute=0,
                thread_budget=0)  # fmt: skip
    base.update(fields)
    return FairUse(FairUsePolicy(**base), clock=FakeClock())


def test_user_in_flight_limit():
    fair = limited(user_in_flight=2)
    assert fair.acquire(keys(thread="a")) is None
    assert fair.acquire(keys(thread="b")) is None
    refusal = fair.acquire(keys(thread="c"))
    assert refusal is not None
    assert refusal.limit == "user relays in flight"


def test_release_frees_slot():
    fair = limited(user_in_flight=1)
    assert fair.acquire(keys()) is None
    fair.release(keys())
    assert fair.acquire(keys()) is None


def test_other_user_not_limited():
    fair = limited(user_in_flight=1)
    assert fair.acquire(keys(user="T:U1")) is None
    assert fair.acquire(keys(user="T:U2")) is None


def test_channel_per_minute_window_slides():
    clock = FakeClock()
    fair = FairUse(FairUsePolicy(user_in_flight=0, user_per_minute=0, channel_in_flight=0,
                                 channel_per_minute=2, thread_budget=0), clock=clock)  # fmt: skip
    for _ in range(2):
        assert fair.acquire(keys()) is None
        fair.release(keys())
    clock.now += 20
    refusal = fair.acquire(keys())
    assert refusal is not None
    assert refusal.limit == "channel relays per minute"
    assert refusal.retry_in_s == pytest.approx(40)
    clock.now += 40.1
    assert fair.acquire(keys()) is None


def test_thread_budget():
    fair = limited(thread_budget=3)
    for _ in range(3):
        assert fair.acquire(keys()) is None
        fair.release(keys())
    refusal = fair.acquire(keys())
    assert refusal is not None
    assert refusal.limit == "relays per thread"
    assert fair.acquire(keys(thread="other")) is None


def test_zero_turns_limits_off():
    fair = limited()
    for _ in range(500):
        assert fair.acquire(keys()) is None


def test_refused_relay_takes_no_slot():
    fair = limited(user_in_flight=1, channel_in_flight=5)
    assert fair.acquire(keys()) is None
    assert fair.acquire(keys()) is not None
    fair.release(keys())
    assert fair.acquire(keys()) is None


async def test_gate_caps_concurrency():
    gate = EndpointGate(concurrency=2, queue=10)
    running = 0
    peak = 0

    async def relay():
        nonlocal running, peak
        async with gate.slot("http://h/relay"):
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.gather(*(relay() for _ in range(8)))
    assert peak == 2


async def test_gate_rejects_when_queue_full():
    gate = EndpointGate(concurrency=1, queue=1)
    release = asyncio.Event()

    async def hold():
        async with gate.slot("k"):
            await release.wait()

    holder = asyncio.create_task(hold())
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    with pytest.raises(EndpointBusyError, match="1 relays running and 1 waiting"):
        async with gate.slot("k"):
            pass
    release.set()
    await asyncio.gather(holder, waiter)


async def test_gate_endpoints_independent():
    gate = EndpointGate(concurrency=1, queue=0)
    async with gate.slot("a"):
        async with gate.slot("b"):
            pass


def test_thread_budget_forgets_least_recent(monkeypatch):
    monkeypatch.setattr("relay_plugin.core.limits.MAX_TRACKED_THREADS", 3)
    fair = limited(thread_budget=1)
    assert fair.acquire(keys(thread="old")) is None
    assert fair.acquire(keys(thread="busy")) is None
    for name in ("t1", "t2"):
        assert fair.acquire(keys(thread=name)) is None
    assert fair.acquire(keys(thread="old")) is None  # forgotten, so its budget starts afresh
    refusal = fair.acquire(keys(thread="t2"))  # still remembered
    assert refusal is not None
