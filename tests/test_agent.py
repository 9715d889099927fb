"""Tests of the reference relay agent over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from relay_plugin.core.protocol import RelayResponse, parse_time
from relay_plugin.tools import agent as agent_module
from relay_plugin.tools.agent import AGENT, RECEIVED, AgentMode, parse_mode, start_agent

Agent = tuple[web.Application, str]
StartAgent = Callable[..., Awaitable[Agent]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def agent_factory() -> AsyncIterator[StartAgent]:
    runners: list[web.AppRunner] = []

    async def start(**kwargs: Any) -> Agent:
        runner, url = await start_agent(**kwargs)
        runners.append(runner)
        return runner.app, url

    yield start
    for runner in runners:
        await runner.cleanup()


def task(task_id: str = "task-1", text: str = "hello") -> dict[str, str]:
    return {"task_id": task_id, "from": "slack-relay", "to": "echo", "content": text}


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict]:
    async with http.post(f"{url}/relay", json=body, headers=headers) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("echo", AgentMode("echo")),
        ("", AgentMode("echo")),
        ("fail", AgentMode("fail")),
        ("delay:0.25", AgentMode("delay", delay_s=0.25)),
        ("fail-first:3", AgentMode("fail-first", fail_first=3)),
    ],
)
def test_parse_mode_valid(text: str, expected: AgentMode) -> None:
    assert parse_mode(text) == expected


@pytest.mark.parametrize(
    "text", ["sing", "delay", "delay:soon", "delay:-1", "delay:inf", "fail-first:-2", "fail:3"]
)
def test_parse_mode_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="invalid agent mode"):
        parse_mode(text)


async def test_echo_answer(agent_factory: StartAgent, http: aiohttp.ClientSession) -> None:
    _, url = await agent_factory()
    before = time.time()

    status, body = await post(http, url, task(text="ping"))
    answer = RelayResponse.from_dict(body)

    assert status == 200
    assert answer.task_id == "task-1"
    assert answer.status == "completed"
    assert answer.content == "echo: ping"
    assert parse_time(body["timestamp"]).timestamp() >= before - 1
    assert isinstance(body["duration"], int)


async def test_name_prefixes_answer(agent_factory: StartAgent, http: aiohttp.ClientSession) -> None:
    _, url = await agent_factory(name="security-bot")

    _, body = await post(http, url, task(text="scan"))

    assert body["content"] == "security-bot: scan"


async def test_message_field_accepted(
    agent_factory: StartAgent, http: aiohttp.ClientSession
) -> None:
    _, url = await agent_factory()
    hotplex_body = {"from": "hotplex", "to": "echo", "session_key": "s1", "message": "hi there"}

    status, body = await post(http, url, hotplex_body)

    assert status == 200
    assert body["content"] == "echo: hi there"


async def test_auth_missing_token(agent_factory: StartAgent, http: aiohttp.ClientSession) -> None:
    app, url = await agent_factory(token="s3cret")

    status, body = await post(http, url, task())

    assert status == 401
    assert "Bearer" in body["error"]
    assert app[AGENT].runs == 0


async def test_auth_wrong_token(agent_factory: StartAgent, http: aiohttp.ClientSession) -> None:
    _, url = await agent_factory(token="s3cret")

    status, _ = await post(http, url, task(), {"Authorization": "Bearer guess"})

    assert status == 401


async def test_auth_right_token(agent_factory: StartAgent, http: aiohttp.ClientSession) -> None:
    app, url = await agent_factory(token="s3cret")

    status, _ = await post(http, url, task(), {"Authorization": "Bearer s3cret"})

    assert status == 200
    assert app[RECEIVED][0].headers["Authorization"] == "Bearer s3cret"


async def test_received_records_body(
    agent_factory: StartAgent, http: aiohttp.ClientSession
) -> None:
    app, url = await agent_factory()

    await post(http, url, task(text="recorded"), {"X-Trace": "t1"})

    received = app[RECEIVED]
    assert len(received) == 1
    assert b'"recorded"' in received[0].body
    assert received[0].headers["X-Trace"] == "t1"


async def test_dedupe_by_task_id(agent_factory: StartAgent, http: aiohttp.ClientSession) -> None:
    app, url = await agent_factory()

    _, first = await post(http, url, task("same", "one"))
    status, second = await post(http, url, task("same", "two"))

    assert status == 200
    assert second == first
    assert app[AGENT].runs == 1


async def test_dedupe_by_idempotency_key(
    agent_factory: StartAgent, http: aiohttp.ClientSession
) -> None:
    app, url = await agent_factory()
    headers = {"Idempotency-Key": "key-1"}

    _, first = await post(http, url, task("a", "one"), headers)
    _, second = await post(http, url, task("b", "two"), headers)

    assert second == first
    assert app[AGENT].runs == 1


async def test_distinct_tasks_both_run(
    agent_factory: StartAgent, http: aiohttp.ClientSession
) -> None:
    app, url = await agent_factory()

    await post(http, url, task("a"))
    await post(http, url, task("b"))

    assert app[AGENT].runs == 2


async def test_answer_cache_bounded(
    agent_factory: StartAgent, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_module, "MAX_REMEMBERED_TASKS", 2)
    app, url = await agent_factory()

    for task_id in ("a", "b", "c", "a"):
        await post(http, url, task(task_id))

    assert app[AGENT].runs == 4


async def test_concurrent_duplicates_run_once(
    agent_factory: StartAgent, http: aiohttp.ClientSession
) -> None:
    app, url = await agent_factory(mode="delay:0.05")

    answers = await asyncio.gather(*(post(http, url, task("dup")) for _ in range(5)))

    assert app[AGENT].runs == 1
    assert len(app[RECEIVED]) == 5
    assert all(answer == answers[0] for answer in answers)


async def test_bad_json_rejected(agent_factory: StartAgent, http: aiohttp.ClientSession) -> None:
    _, url = await agent_factory()

    async with http.post(f"{url}/relay", data=b"{not json") as response:
        status = response.status
        body = await response.json()

    assert status == 400
    assert "invalid RelayMessage" in body["error"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([1, 2], "JSON object"),
        ({"task_id": 7, "content": "x"}, "'task_id'"),
        ({"task_id": "t", "status": "sleeping", "content": "x"}, "unknown task status"),
        ({"task_id": "t"}, "no text"),
    ],
)
async def test_invalid_message_rejected(
    agent_factory: StartAgent, http: aiohttp.ClientSession, body: Any, reason: str
) -> None:
    app, url = await agent_factory()

    status, answer = await post(http, url, body)

    assert status == 400
    assert reason in answer["error"]
    assert app[AGENT].runs == 0


async def test_fail_first_then_echo(
    agent_factory: StartAgent, http: aiohttp.ClientSession
) -> None:
    _, url = await agent_factory(mode="fail-first:2")

    statuses = [(await post(http, url, task("retried")))[0] for _ in range(3)]

    assert statuses == [503, 503, 200]


async def test_fail_mode_answers_failed(
    agent_factory: StartAgent, http: aiohttp.ClientSession
) -> None:
    _, url = await agent_factory(mode="fail")

    status, body = await post(http, url, task())
    answer = RelayResponse.from_dict(body)

    assert status == 500
    assert answer.failed
    assert "fail" in answer.error


async def test_delay_mode_waits(agent_factory: StartAgent, http: aiohttp.ClientSession) -> None:
    _, url = await agent_factory(mode=AgentMode("delay", delay_s=0.05))
    started = time.monotonic()

    _, body = await post(http, url, task())

    assert time.monotonic() - started >= 0.05
    assert body["duration"] >= 50_000_000


async def test_healthz(agent_factory: StartAgent, http: aiohttp.ClientSession) -> None:
    _, url = await agent_factory()

    async with http.get(f"{url}/healthz") as response:
        status = response.status
        body = await response.json()

    assert status == 200
    assert body == {"ok": True}


async def test_start_agent_url(agent_factory: StartAgent) -> None:
    _, url = await agent_factory()

    assert url.startswith("http://127.0.0.1:")
    assert int(url.rsplit(":", 1)[1]) > 0


async def test_shutdown_cancels_running_task(http: aiohttp.ClientSession) -> None:
    runner, url = await start_agent(mode="delay:30")
    pending = asyncio.create_task(post(http, url, task()))
    deadline = time.monotonic() + 5
    while runner.app[AGENT].runs == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    started = time.monotonic()

    await runner.cleanup()

    assert time.monotonic() - started < 5
    with pytest.raises(aiohttp.ClientError):
        await pending
