"""The target guard: address rules, the allowlist, bind-time checks and the guarded resolver.

Host names resolve only through StubResolver, so these tests look up no real name and connect
nowhere except to a server of their own on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from relay_plugin.config import Settings
from relay_plugin.core.breakers import BreakerRegistry
from relay_plugin.core.guard import (
    GuardedResolver,
    HostAllowList,
    TargetGuard,
    address_problem,
)
from relay_plugin.core.manager import RelayManager
from relay_plugin.core.policy import BreakerPolicy, RetryPolicy
from relay_plugin.core.sender import RelaySender, new_client_session
from relay_plugin.core.store import BindingStore, BotBinding
from relay_plugin.errors import (
    ConfigError,
    InvalidBindingError,
    TargetBlockedError,
    TargetNotAllowedError,
)

FAST = RetryPolicy(retries=2, base_s=0.01, connect_timeout_s=1.0, answer_timeout_s=1.0)
FIX = "add it to RELAY_ALLOWED_HOSTS"
PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


class StubResolver(AbstractResolver):
    """Resolves names from a table, with no network traffic, and records each lookup."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[tuple[str, int]] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [_result(host, address, port) for address in self.table[host]]

    async def close(self) -> None:
        pass


class StalledResolver(StubResolver):
    """Never returns, so a lookup times out."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        await asyncio.sleep(5.0)
        return []


def _result(host: str, address: str, port: int) -> ResolveResult:
    version = ipaddress.ip_address(address).version
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    return ResolveResult(
        hostname=host, host=address, port=port, family=family, proto=0, flags=0
    )


def guard_for(
    addresses: list[str], allowed: str = "", host: str = "bots.example.test"
) -> TargetGuard:
    return TargetGuard(HostAllowList.parse(allowed), resolver=StubResolver({host: addresses}))


BLOCKED = [
    ("10.0.0.5", "a private address"),
    ("172.16.0.1", "a private address"),
    ("192.168.1.1", "a private address"),
    ("169.254.169.254", "a link-local address"),
    ("127.0.0.1", "a loopback address"),
    ("::1", "a loopback address"),
    ("fd00::1", "a private address"),
    ("fe80::1", "a link-local address"),
    ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1, a loopback address"),
    ("::ffff:169.254.169.254", "IPv4-mapped form of 169.254.169.254, a link-local address"),
    ("64:ff9b::a00:5", "NAT64 form of 10.0.0.5, a private address"),
    ("2002:a00:5::", "6to4 form of 10.0.0.5, a private address"),
    ("224.0.0.1", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("0.0.0.0", "an unspecified address"),
    ("::", "an unspecified address"),
    ("100.64.0.1", "a shared address"),
    ("240.0.0.1", "a reserved address"),
    ("255.255.255.255", "a reserved address"),
    ("fec0::1", "a site-local address"),
    ("192.0.2.1", "not globally reachable"),
    ("0.1.2.3", "not globally reachable"),
]
PUBLIC = [PUBLIC_V4, PUBLIC_V6, "::ffff:93.184.216.34", "64:ff9b::5db8:d822", "2002:5db8:d822::"]


@pytest.mark.parametrize(("address", "reason"), BLOCKED, ids=[a for a, _ in BLOCKED])
def test_address_blocked(address: str, reason: str) -> None:
    problem = address_problem(ipaddress.ip_address(address))
    assert problem is not None
    assert reason in problem


@pytest.mark.parametrize("address", PUBLIC)
def test_address_public(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(("address", "reason"), BLOCKED, ids=[a for a, _ in BLOCKED])
async def test_bind_name_blocked(address: str, reason: str) -> None:
    guard = guard_for([address])
    with pytest.raises(TargetNotAllowedError) as caught:
        await guard.resolve_url("https://bots.example.test:9080/")
    text = str(caught.value)
    assert f"bots.example.test resolves to {address}, " in text
    assert reason in text
    assert FIX in text
    assert caught.value.host == "bots.example.test"
    assert caught.value.blocked[0][0] == address


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.5:9080/", "http://169.254.169.254/latest/meta-data/", "http://[::1]:80/",
     "http://[::ffff:127.0.0.1]/", "http://0.0.0.0:8080/", "http://100.64.0.1/"],
)  # fmt: skip
async def test_bind_literal_blocked(url: str) -> None:
    resolver = StubResolver({})
    guard = TargetGuard(resolver=resolver)
    with pytest.raises(TargetNotAllowedError) as caught:
        await guard.resolve_url(url)
    assert FIX in str(caught.value)
    assert resolver.lookups == []


def test_literal_message() -> None:
    with pytest.raises(TargetNotAllowedError) as caught:
        TargetGuard(resolver=StubResolver({})).check_url("http://10.0.0.5:9080/")
    assert "10.0.0.5 is a private address; if this host is meant" in str(caught.value)


@pytest.mark.parametrize("address", PUBLIC)
async def test_bind_name_public(address: str) -> None:
    guard = guard_for([address])
    assert await guard.resolve_url("https://bots.example.test/") == [address]


async def test_mixed_answer_filtered() -> None:
    guard = guard_for(["10.0.0.5", PUBLIC_V4, "::1", PUBLIC_V6])
    results = await guard.resolve("bots.example.test", 443)
    assert [result["host"] for result in results] == [PUBLIC_V4, PUBLIC_V6]
    assert [result["port"] for result in results] == [443, 443]


async def test_all_blocked_lists_each() -> None:
    guard = guard_for(["10.0.0.5", "fd00::1"])
    with pytest.raises(TargetNotAllowedError) as caught:
        await guard.resolve_url("http://bots.example.test/")
    text = str(caught.value)
    assert "10.0.0.5 (a private address)" in text
    assert "fd00::1 (a private address)" in text
    assert len(caught.value.blocked) == 2


async def test_guarded_resolver_filters() -> None:
    resolver = GuardedResolver(guard_for(["10.0.0.5", PUBLIC_V4]))
    results = await resolver.resolve("bots.example.test", 80, socket.AF_UNSPEC)
    assert [result["host"] for result in results] == [PUBLIC_V4]


async def test_guarded_resolver_raises() -> None:
    resolver = GuardedResolver(guard_for(["169.254.169.254"]))
    with pytest.raises(TargetNotAllowedError, match="link-local"):
        await resolver.resolve("bots.example.test", 80, socket.AF_UNSPEC)


async def test_allowed_by_name() -> None:
    guard = guard_for(["10.0.0.5", "::1"], allowed="Bots.Example.Test.", host="bots.example.test")
    assert await guard.resolve_url("http://bots.example.test:9080/") == ["10.0.0.5", "::1"]


async def test_allowed_name_is_exact() -> None:
    resolver = StubResolver({"other.example.test": ["10.0.0.5"]})
    guard = TargetGuard(HostAllowList.parse("example.test"), resolver=resolver)
    with pytest.raises(TargetNotAllowedError):
        await guard.resolve_url("http://other.example.test/")


async def test_allowed_by_address() -> None:
    guard = guard_for(["10.0.0.5", "10.0.0.6"], allowed="10.0.0.5")
    results = await guard.resolve("bots.example.test", 80)
    assert [result["host"] for result in results] == ["10.0.0.5"]


@pytest.mark.parametrize(
    ("allowed", "address"),
    [("10.20.0.0/16", "10.20.3.4"), ("fd00::/8", "fd00::1"), ("127.0.0.1", "::ffff:127.0.0.1"),
     ("[::1]", "::1"), ("100.64.0.0/10", "100.64.0.1")],
)  # fmt: skip
async def test_allowed_by_cidr(allowed: str, address: str) -> None:
    guard = guard_for([address], allowed=allowed)
    assert await guard.resolve_url("http://bots.example.test/") == [address]


async def test_cidr_bounds_respected() -> None:
    guard = guard_for(["10.21.0.1"], allowed="10.20.0.0/16")
    with pytest.raises(TargetNotAllowedError, match="10.21.0.1"):
        await guard.resolve_url("http://bots.example.test/")


def test_allowed_literal() -> None:
    guard = TargetGuard(HostAllowList.parse("127.0.0.1, ::1"), resolver=StubResolver({}))
    assert guard.check_url("http://127.0.0.1:9080/") == "127.0.0.1"
    assert guard.check_url("http://[::1]:9080/") == "::1"


def test_allowlist_parsed() -> None:
    allowed = HostAllowList.parse(" 127.0.0.1 ,,::1, Bots.Internal.Example ,10.20.0.0/16,")
    assert allowed.names == frozenset({"bots.internal.example"})
    assert [str(network) for network in allowed.networks] == [
        "127.0.0.1/32", "::1/128", "10.20.0.0/16"
    ]  # fmt: skip
    assert HostAllowList.parse("") == HostAllowList()


@pytest.mark.parametrize(
    ("entry", "hint"),
    [("http://bots.test", "without scheme or port"), ("bots.test:8080", "without scheme or port"),
     ("*.example.test", "without scheme or port"), ("bad host", "without scheme or port"),
     ("10.20.0.5/16", "e.g. 10.20.0.0/16"), ("300.1.1.1", "not a valid IP address"),
     ("10.0.0.0/33", "not a valid IP address"), ("127.1", "not a valid IP address")],
)  # fmt: skip
def test_invalid_entry(entry: str, hint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        HostAllowList.parse(f"127.0.0.1,{entry}")
    assert caught.value.name == "RELAY_ALLOWED_HOSTS"
    assert repr(entry) in str(caught.value)
    assert hint in str(caught.value)


def test_settings_read_allowlist() -> None:
    env = {"RELAY_DATA_DIR": "/tmp/x", "RELAY_ALLOWED_HOSTS": "127.0.0.1,agent.test"}
    settings = Settings.from_env(env, require_slack=False)
    assert settings.allowed_hosts.names == frozenset({"agent.test"})
    assert [str(network) for network in settings.allowed_hosts.networks] == ["127.0.0.1/32"]
    default = Settings.from_env({"RELAY_DATA_DIR": "/tmp/x"}, require_slack=False)
    assert default.allowed_hosts == HostAllowList()


def test_settings_reject_bad_entry() -> None:
    env = {"RELAY_DATA_DIR": "/tmp/x", "RELAY_ALLOWED_HOSTS": "https://agent.test"}
    with pytest.raises(ConfigError, match="RELAY_ALLOWED_HOSTS"):
        Settings.from_env(env, require_slack=False)


async def test_bind_name_unresolvable() -> None:
    guard = TargetGuard(resolver=StubResolver({}))
    with pytest.raises(InvalidBindingError) as caught:
        await guard.resolve_url("https://bots.example.invalid/")
    assert not isinstance(caught.value, TargetNotAllowedError)
    assert "bots.example.invalid does not resolve" in str(caught.value)
    assert "check the name" in str(caught.value)


async def test_bind_empty_answer() -> None:
    guard = guard_for([])
    with pytest.raises(InvalidBindingError, match="no address found for bots.example.test"):
        await guard.resolve_url("https://bots.example.test/")


async def test_bind_lookup_timeout() -> None:
    guard = TargetGuard(resolver=StalledResolver({}), resolve_timeout_s=0.05)
    with pytest.raises(InvalidBindingError, match="timed out after 0.05 s"):
        await guard.resolve_url("https://bots.example.test/")


@pytest.mark.parametrize(
    ("url", "problem"),
    [("ftp://bots.example.test/", "http or https"), ("http://u:p@bots.example.test/", "password"),
     ("http://127.1/", "not a valid IP address"), ("http://2130706433/", "not a valid IP address")],
)  # fmt: skip
async def test_bind_invalid_url(url: str, problem: str) -> None:
    resolver = StubResolver({})
    with pytest.raises(InvalidBindingError, match=problem):
        await TargetGuard(resolver=resolver).resolve_url(url)
    assert resolver.lookups == []


@pytest.fixture
async def agent() -> AsyncIterator[tuple[str, list[str]]]:
    """A relay receiver on 127.0.0.1; yields its port and the paths it received."""
    paths: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        paths.append(request.path)
        return web.json_response({"status": "completed", "content": "hi"})

    app = web.Application()
    app.router.add_post("/relay", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1], paths
    finally:
        await runner.cleanup()


@asynccontextmanager
async def guarded_manager(tmp_path: Path, guard: TargetGuard) -> AsyncIterator[RelayManager]:
    """A RelayManager whose sender, session and bindings all use ``guard``."""
    with BindingStore(tmp_path) as store:
        async with new_client_session(FAST, guard=guard) as session:
            sender = RelaySender(session, FAST, guard=guard)
            yield RelayManager(
                store, sender, BreakerRegistry(BreakerPolicy()), instance_name="t", guard=guard
            )


async def test_manager_rejects_blocked(tmp_path: Path) -> None:
    async with guarded_manager(tmp_path, guard_for(["10.0.0.5"])) as manager:
        with pytest.raises(TargetNotAllowedError, match="10.0.0.5, a private address"):
            await manager.add_binding(BotBinding("T1", "C1", "bot", "http://bots.example.test/"))
        assert manager.list_bindings("T1", "C1") == []


async def test_manager_rejects_unresolvable(tmp_path: Path) -> None:
    async with guarded_manager(tmp_path, TargetGuard(resolver=StubResolver({}))) as manager:
        with pytest.raises(InvalidBindingError, match="does not resolve"):
            await manager.add_binding(BotBinding("T1", "C1", "bot", "http://bots.example.invalid/"))
        assert manager.list_bindings("T1", "C1") == []


async def test_send_rechecks_after_bind(
    tmp_path: Path, agent: tuple[str, list[str]]
) -> None:
    port, paths = agent
    resolver = StubResolver({"agent.test": [PUBLIC_V4]})
    async with guarded_manager(tmp_path, TargetGuard(resolver=resolver)) as manager:
        await manager.add_binding(BotBinding("T1", "C1", "bot", f"http://agent.test:{port}/"))
        # The name now points at loopback, as in DNS rebinding; the send must not reach it.
        resolver.table["agent.test"] = ["127.0.0.1"]
        with pytest.raises(TargetBlockedError) as caught:
            await manager.send("T1", "C1", "bot", "hello", "slack:T1:C1:1", "")
    assert "agent.test resolves to 127.0.0.1, a loopback address" in str(caught.value)
    assert caught.value.attempts == 1
    assert paths == []
    assert resolver.lookups == [("agent.test", port), ("agent.test", port)]


async def test_blocked_sends_do_not_open_breaker(tmp_path: Path, agent) -> None:
    port, paths = agent
    resolver = StubResolver({"agent.test": [PUBLIC_V4]})
    async with guarded_manager(tmp_path, TargetGuard(resolver=resolver)) as manager:
        await manager.add_binding(BotBinding("T1", "C1", "bot", f"http://agent.test:{port}/"))
        resolver.table["agent.test"] = ["10.0.0.5"]
        for _ in range(7):
            with pytest.raises(TargetBlockedError):
                await manager.send("T1", "C1", "bot", "hello", "slack:T1:C1:1", "")
        state = manager.status(manager.find("T1", "C1", "bot")).breaker.state
    assert state == "closed"
    assert paths == []
