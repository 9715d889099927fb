"""The relay sender against real HTTP servers on 127.0.0.1: answers, errors, retries, timeouts."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientSession, web
from aiohttp.abc import AbstractResolver, ResolveResult

from relay_plugin import __version__
from relay_plugin.core.guard import GuardedResolver, HostAllowList, TargetGuard
from relay_plugin.core.policy import RetryPolicy
from relay_plugin.core.protocol import RelayMessage
from relay_plugin.core.sender import (
    RelaySender,
    RetryWait,
    new_client_session,
    parse_retry_after,
)
from relay_plugin.errors import (
    BadAnswerError,
    RemoteHTTPError,
    RemoteTimeoutError,
    RemoteUnreachableError,
    TargetBlockedError,
)

FAST = RetryPolicy(
    retries=3,
    base_s=0.01,
    jitter=0.1,
    retry_after_max_s=0.05,
    connect_timeout_s=1.0,
    answer_timeout_s=0.2,
)
STUB = b'{"task_id":"","status":"ok","timestamp":"0001-01-01T00:00:00Z","duration":0}'
MESSAGE = RelayMessage(
    task_id="5f0c6f7e-1d2b-4c1e-9a51-0c8e2d6b7a10",
    from_="slack-relay",
    to="security-bot",
    content="scan the repo",
    session_key="slack:T1:C1:1700000000.000100",
)

Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]


def reply(status: int = 200, body: bytes = STUB, **headers: str) -> Reply:
    async def handler(request: web.Request) -> web.StreamResponse:
        merged = {"Content-Type": "application/json", **headers}
        return web.Response(status=status, body=body, headers=merged)

    return handler


def retry_after(status: int, value: str) -> Reply:
    return reply(status, b'{"error":"busy"}', **{"Retry-After": value})


async def hang(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(5.0)  # cancelled when the client goes away
    return web.Response()


async def drop(request: web.Request) -> web.StreamResponse:
    await request.read()
    assert request.transport is not None
    request.transport.abort()
    await asyncio.sleep(5.0)  # cancelled because the connection is gone
    return web.Response()


@dataclass
class Arrival:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Remote:
    """A relay receiver on 127.0.0.1 that answers from a script and records each request."""

    base_url: str = ""
    replies: list[Reply] = field(default_factory=lambda: [reply()])
    arrivals: list[Arrival] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.arrivals.append(Arrival(time.monotonic(), request.path, dict(request.headers), body))
        index = min(len(self.arrivals), len(self.replies)) - 1
        return await self.replies[index](request)

    def gaps(self) -> list[float]:
        times = [arrival.at for arrival in self.arrivals]
        return [later - earlier for earlier, later in zip(times, times[1:])]


@pytest.fixture
async def remote() -> AsyncIterator[Remote]:
    server = Remote()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.base_url = f"http://{host}:{port}/"
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_client_session(FAST) as client:
        yield client


@pytest.fixture
def waits() -> list[RetryWait]:
    return []


def make_sender(
    session: ClientSession,
    waits: list[RetryWait],
    policy: RetryPolicy = FAST,
    **options: Any,
) -> RelaySender:
    return RelaySender(session, policy, on_wait=waits.append, **options)


async def test_stub_answer_accepted(remote: Remote, session: ClientSession) -> None:
    result = await RelaySender(session, FAST).send(MESSAGE, remote.base_url)
    assert result.response.status == "ok"
    assert result.response.task_id == ""
    assert result.attempts == 1
    assert result.elapsed_s > 0


async def test_request_shape(remote: Remote, session: ClientSession) -> None:
    await RelaySender(session, FAST).send(MESSAGE, remote.base_url, token="t-123")
    arrival = remote.arrivals[0]
    assert arrival.path == "/relay"
    assert arrival.headers["Authorization"] == "Bearer t-123"
    assert arrival.headers["Idempotency-Key"] == MESSAGE.task_id
    assert arrival.headers["User-Agent"] == f"relay-plugin/{__version__}"
    assert arrival.headers["Content-Type"] == "application/json"
    sent = json.loads(arrival.body)
    assert sent["task_id"] == MESSAGE.task_id
    assert sent["from"] == "slack-relay"
    assert sent["to"] == "security-bot"
    assert sent["content"] == "scan the repo"
    assert sent["message"] == "scan the repo"
    assert sent["session_key"] == MESSAGE.session_key


async def test_path_used_as_given(remote: Remote, session: ClientSession) -> None:
    await RelaySender(session, FAST).send(MESSAGE, remote.base_url + "hooks/agent")
    assert remote.arrivals[0].path == "/hooks/agent"


async def test_default_token_used(remote: Remote, session: ClientSession) -> None:
    await RelaySender(session, FAST, default_token="fallback").send(MESSAGE, remote.base_url)
    assert remote.arrivals[0].headers["Authorization"] == "Bearer fallback"


async def test_no_token_no_header(remote: Remote, session: ClientSession) -> None:
    await RelaySender(session, FAST).send(MESSAGE, remote.base_url)
    assert "Authorization" not in remote.arrivals[0].headers


async def test_backoff_schedule(
    remote: Remote, session: ClientSession, waits: list[RetryWait]
) -> None:
    policy = RetryPolicy(retries=3, base_s=0.02, jitter=0.5, connect_timeout_s=1.0)
    remote.replies = [reply(502), reply(502), reply(502), reply()]
    result = await make_sender(session, waits, policy).send(MESSAGE, remote.base_url)
    assert result.attempts == 4
    assert [wait.attempt for wait in waits] == [1, 2, 3]
    for wait, nominal in zip(waits, [0.02, 0.04, 0.08]):
        assert nominal <= wait.delay_s <= nominal * 1.5
    for gap, wait in zip(remote.gaps(), waits):
        assert gap >= wait.delay_s


async def test_retries_exhausted(
    remote: Remote, session: ClientSession, waits: list[RetryWait]
) -> None:
    remote.replies = [reply(503, b"overloaded")]
    with pytest.raises(RemoteHTTPError) as caught:
        await make_sender(session, waits).send(MESSAGE, remote.base_url)
    error = caught.value
    assert error.attempts == 4
    assert error.status == 503
    assert error.url == remote.base_url + "relay"
    assert error.excerpt == "overloaded"
    assert len(remote.arrivals) == 4


async def test_zero_retries(remote: Remote, session: ClientSession) -> None:
    remote.replies = [reply(503)]
    sender = RelaySender(session, RetryPolicy(retries=0))
    with pytest.raises(RemoteHTTPError):
        await sender.send(MESSAGE, remote.base_url)
    assert len(remote.arrivals) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 501])
async def test_no_retry_on_status(remote: Remote, session: ClientSession, status: int) -> None:
    remote.replies = [reply(status, b'{"error":"bad request"}')]
    with pytest.raises(RemoteHTTPError) as caught:
        await RelaySender(session, FAST).send(MESSAGE, remote.base_url)
    assert caught.value.status == status
    assert caught.value.attempts == 1
    assert len(remote.arrivals) == 1


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_retry_on_status(remote: Remote, session: ClientSession, status: int) -> None:
    remote.replies = [reply(status), reply()]
    result = await RelaySender(session, FAST).send(MESSAGE, remote.base_url)
    assert result.attempts == 2


@pytest.mark.parametrize("status", [500, 501, 507])
async def test_5xx_retried_with_dedupe(remote: Remote, session: ClientSession, status: int) -> None:
    remote.replies = [reply(status), reply()]
    result = await RelaySender(session, FAST).send(MESSAGE, remote.base_url, dedupe=True)
    assert result.attempts == 2


async def test_500_not_retried(remote: Remote, session: ClientSession) -> None:
    remote.replies = [reply(500), reply()]
    with pytest.raises(RemoteHTTPError) as caught:
        await RelaySender(session, FAST).send(MESSAGE, remote.base_url)
    assert caught.value.attempts == 1
    assert len(remote.arrivals) == 1


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_exact(
    remote: Remote, session: ClientSession, waits: list[RetryWait], status: int
) -> None:
    remote.replies = [retry_after(status, "0.03"), reply()]
    await make_sender(session, waits).send(MESSAGE, remote.base_url)
    assert waits[0].delay_s == 0.03
    assert remote.gaps()[0] >= 0.03


async def test_retry_after_capped(
    remote: Remote, session: ClientSession, waits: list[RetryWait]
) -> None:
    remote.replies = [retry_after(429, "1.5"), reply()]
    started = time.monotonic()
    await make_sender(session, waits).send(MESSAGE, remote.base_url)
    assert waits[0].delay_s == FAST.retry_after_max_s
    assert time.monotonic() - started < 1.0


async def test_retry_after_ignored_on_502(
    remote: Remote, session: ClientSession, waits: list[RetryWait]
) -> None:
    remote.replies = [retry_after(502, "0.04"), reply()]
    await make_sender(session, waits).send(MESSAGE, remote.base_url)
    assert 0.01 <= waits[0].delay_s <= 0.011


async def test_bad_retry_after_ignored(
    remote: Remote, session: ClientSession, waits: list[RetryWait]
) -> None:
    remote.replies = [retry_after(429, "soon"), reply()]
    await make_sender(session, waits).send(MESSAGE, remote.base_url)
    assert 0.01 <= waits[0].delay_s <= 0.011


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("0.5", now) == 0.5
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("-3", now) is None
    assert parse_retry_after("nan", now) is None
    assert parse_retry_after("later", now) is None
    assert parse_retry_after("", now) is None


async def test_answer_timeout_not_retried(remote: Remote, session: ClientSession) -> None:
    remote.replies = [hang]
    policy = RetryPolicy(retries=2, base_s=0.01, answer_timeout_s=0.1)
    with pytest.raises(RemoteTimeoutError) as caught:
        await RelaySender(session, policy).send(MESSAGE, remote.base_url)
    assert caught.value.attempts == 1
    assert len(remote.arrivals) == 1


async def test_answer_timeout_dedupe_retried(remote: Remote, session: ClientSession) -> None:
    remote.replies = [hang, reply()]
    policy = RetryPolicy(retries=2, base_s=0.01, answer_timeout_s=0.1)
    result = await RelaySender(session, policy).send(MESSAGE, remote.base_url, dedupe=True)
    assert result.attempts == 2
    assert len(remote.arrivals) == 2


async def test_disconnect_not_retried(remote: Remote, session: ClientSession) -> None:
    remote.replies = [drop, reply()]
    with pytest.raises(RemoteUnreachableError) as caught:
        await RelaySender(session, FAST).send(MESSAGE, remote.base_url)
    assert caught.value.attempts == 1
    assert len(remote.arrivals) == 1


async def test_disconnect_dedupe_retried(remote: Remote, session: ClientSession) -> None:
    remote.replies = [drop, reply()]
    result = await RelaySender(session, FAST).send(MESSAGE, remote.base_url, dedupe=True)
    assert result.attempts == 2


async def test_refused_retried(session: ClientSession, waits: list[RetryWait]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(RemoteUnreachableError) as caught:
        await make_sender(session, waits).send(MESSAGE, url)
    assert caught.value.attempts == 4
    assert caught.value.status is None
    assert caught.value.url == url + "relay"
    assert len(waits) == 3


class FailingResolver(AbstractResolver):
    """A resolver that fails every lookup without any network traffic."""

    async def resolve(
        self, host: str, port: int = 0, family: int = socket.AF_INET
    ) -> list[ResolveResult]:
        raise OSError(-2, "Name or service not known")

    async def close(self) -> None:
        pass


class StalledResolver(FailingResolver):
    """A resolver that never finishes, to make the connect phase time out."""

    async def resolve(
        self, host: str, port: int = 0, family: int = socket.AF_INET
    ) -> list[ResolveResult]:
        await asyncio.sleep(5.0)
        raise OSError(-3, "Temporary failure in name resolution")


async def test_dns_failure_retried(waits: list[RetryWait]) -> None:
    connector = aiohttp.TCPConnector(resolver=FailingResolver())
    async with aiohttp.ClientSession(connector=connector) as client:
        with pytest.raises(RemoteUnreachableError) as caught:
            await make_sender(client, waits).send(MESSAGE, "http://bot.invalid:9080/")
    assert caught.value.attempts == 4


async def test_connect_timeout_retried(waits: list[RetryWait]) -> None:
    policy = RetryPolicy(retries=2, base_s=0.01, connect_timeout_s=0.05)
    connector = aiohttp.TCPConnector(resolver=StalledResolver())
    async with aiohttp.ClientSession(connector=connector) as client:
        with pytest.raises(RemoteTimeoutError) as caught:
            await make_sender(client, waits, policy).send(MESSAGE, "http://bot.invalid:9080/")
    assert caught.value.attempts == 3


async def test_redirect_not_followed(remote: Remote, session: ClientSession) -> None:
    remote.replies = [reply(302, b"", Location="/elsewhere")]
    with pytest.raises(RemoteHTTPError) as caught:
        await RelaySender(session, FAST).send(MESSAGE, remote.base_url)
    assert caught.value.status == 302
    assert caught.value.attempts == 1
    assert [arrival.path for arrival in remote.arrivals] == ["/relay"]


async def test_html_answer_rejected(remote: Remote, session: ClientSession) -> None:
    page = b"<html><body><h1>Welcome to nginx</h1></body></html>"
    remote.replies = [reply(200, page, **{"Content-Type": "text/html"})]
    with pytest.raises(BadAnswerError) as caught:
        await RelaySender(session, FAST).send(MESSAGE, remote.base_url, dedupe=True)
    assert caught.value.status == 200
    assert caught.value.attempts == 1
    assert "Welcome to nginx" in caught.value.excerpt
    assert "HTML" in str(caught.value)


async def test_answer_too_large(remote: Remote, session: ClientSession) -> None:
    remote.replies = [reply(200, b'{"status":"ok","content":"' + b"x" * 5000 + b'"}')]
    sender = RelaySender(session, FAST, max_answer_bytes=1024)
    with pytest.raises(BadAnswerError) as caught:
        await sender.send(MESSAGE, remote.base_url)
    assert "answer too large" in str(caught.value)
    assert caught.value.attempts == 1


async def test_answer_at_limit(remote: Remote, session: ClientSession) -> None:
    body = b'{"status":"ok","content":"' + b"x" * 1000 + b'"}'
    remote.replies = [reply(200, body)]
    sender = RelaySender(session, FAST, max_answer_bytes=len(body))
    result = await sender.send(MESSAGE, remote.base_url)
    assert len(result.response.content) == 1000


async def test_logs_without_token(
    remote: Remote, session: ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    remote.replies = [reply(503, b"Bearer s3cr3t-token echoed")]
    caplog.set_level(logging.DEBUG, logger="relay_plugin")
    with pytest.raises(RemoteHTTPError):
        await RelaySender(session, FAST).send(MESSAGE, remote.base_url, token="s3cr3t-token")
    debug_records = [record for record in caplog.records if record.levelno == logging.DEBUG]
    warning_records = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(debug_records) == 3
    assert len(warning_records) == 1
    assert all("s3cr3t" not in record.getMessage() for record in caplog.records)


async def test_credentials_in_url_rejected(remote: Remote, session: ClientSession) -> None:
    url = remote.base_url.replace("http://", "http://user:pa55word@")
    with pytest.raises(RemoteUnreachableError) as caught:
        await RelaySender(session, FAST, default_token="t").send(MESSAGE, url)
    assert "pa55word" not in str(caught.value)
    assert caught.value.url == remote.base_url + "relay"
    assert remote.arrivals == []


def test_negative_retries_rejected() -> None:
    with pytest.raises(ValueError, match="retries"):
        RelaySender(None, RetryPolicy(retries=-1))  # type: ignore[arg-type]


class TableResolver(FailingResolver):
    """Resolves names from a table of loopback addresses, with no network traffic."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: int = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        if host not in self.table:
            return await super().resolve(host, port, family)
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0
            )
            for address in self.table[host]
        ]


def loopback_only(connected: list[str]) -> Callable[[Any], socket.socket]:
    """A socket factory that records each address and refuses any that is not 127.0.0.1."""

    def factory(addr_info: Any) -> socket.socket:
        family, kind, proto, _, address = addr_info
        connected.append(address[0])
        if address[0] != "127.0.0.1":
            raise OSError(f"this test connects only to 127.0.0.1, not {address[0]}")
        return socket.socket(family, kind, proto)

    return factory


def guarded(allowed: str, table: dict[str, list[str]] | None = None) -> TargetGuard:
    return TargetGuard(HostAllowList.parse(allowed), resolver=TableResolver(table or {}))


def port_of(remote: Remote) -> int:
    return int(remote.base_url.rstrip("/").rpartition(":")[2])


async def test_loopback_literal_blocked(remote: Remote, waits: list[RetryWait]) -> None:
    guard = guarded("")
    async with new_client_session(FAST, guard=guard) as client:
        sender = make_sender(client, waits, guard=guard)
        with pytest.raises(TargetBlockedError) as caught:
            await sender.send(MESSAGE, remote.base_url)
    assert "blocked: 127.0.0.1 is a loopback address" in str(caught.value)
    assert "RELAY_ALLOWED_HOSTS" in str(caught.value)
    assert caught.value.attempts == 0
    assert waits == []
    assert remote.arrivals == []


async def test_loopback_literal_allowed(remote: Remote) -> None:
    guard = guarded("127.0.0.1")
    async with new_client_session(FAST, guard=guard) as client:
        result = await RelaySender(client, FAST, guard=guard).send(MESSAGE, remote.base_url)
    assert result.attempts == 1
    assert len(remote.arrivals) == 1


async def test_allowed_name_pinned(remote: Remote) -> None:
    port = port_of(remote)
    resolver = TableResolver({"agent.test": ["127.0.0.1"]})
    guard = TargetGuard(HostAllowList.parse("agent.test"), resolver=resolver)
    async with new_client_session(FAST, guard=guard) as client:
        sender = RelaySender(client, FAST, guard=guard)
        await sender.send(MESSAGE, f"http://agent.test:{port}/relay")
        await sender.send(MESSAGE, f"http://agent.test:{port}/relay")
    assert [arrival.headers["Host"] for arrival in remote.arrivals] == [f"agent.test:{port}"] * 2
    assert resolver.lookups == ["agent.test", "agent.test"]


async def test_loopback_name_blocked(remote: Remote, waits: list[RetryWait]) -> None:
    port = port_of(remote)
    guard = guarded("", {"agent.test": ["127.0.0.1"]})
    async with new_client_session(FAST, guard=guard) as client:
        sender = make_sender(client, waits, guard=guard)
        with pytest.raises(TargetBlockedError) as caught:
            await sender.send(MESSAGE, f"http://agent.test:{port}/relay", dedupe=True)
    assert "agent.test resolves to 127.0.0.1, a loopback address" in str(caught.value)
    assert caught.value.attempts == 1
    assert waits == []
    assert remote.arrivals == []


async def test_mixed_answer_connects_allowed(remote: Remote) -> None:
    port = port_of(remote)
    guard = guarded("127.0.0.1", {"agent.test": ["10.0.0.5", "127.0.0.1", "10.0.0.6"]})
    connected: list[str] = []
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(guard),
        use_dns_cache=False,
        socket_factory=loopback_only(connected),
    )
    async with aiohttp.ClientSession(connector=connector) as client:
        result = await RelaySender(client, FAST, guard=guard).send(
            MESSAGE, f"http://agent.test:{port}/"
        )
    assert result.attempts == 1
    assert connected == ["127.0.0.1"]
    assert len(remote.arrivals) == 1


async def test_guarded_scheme_rejected(remote: Remote) -> None:
    guard = guarded("127.0.0.1")
    async with new_client_session(FAST, guard=guard) as client:
        with pytest.raises(TargetBlockedError, match="http or https"):
            await RelaySender(client, FAST, guard=guard).send(
                MESSAGE, remote.base_url.replace("http://", "ftp://")
            )
    assert remote.arrivals == []


async def test_guarded_redirect_not_followed(remote: Remote) -> None:
    remote.replies = [reply(307, b"", Location=remote.base_url + "elsewhere")]
    guard = guarded("127.0.0.1")
    async with new_client_session(FAST, guard=guard) as client:
        with pytest.raises(RemoteHTTPError) as caught:
            await RelaySender(client, FAST, guard=guard).send(MESSAGE, remote.base_url)
    assert caught.value.status == 307
    assert [arrival.path for arrival in remote.arrivals] == ["/relay"]
