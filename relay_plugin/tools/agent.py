"""Reference relay agent: the receiving side of the relay protocol.

A template for putting your own agent behind the protocol, and the remote that tests and demos
relay to. ``POST /relay`` takes a RelayMessage and responds with a RelayResponse, and
``GET /healthz`` responds with ``{"ok": true}``. A repeated task id or ``Idempotency-Key`` gets
the first response again instead of a second run, because senders retry a POST that may
already have run.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import aiohttp
from aiohttp import web

from relay_plugin.core.callback_auth import signed_headers
from relay_plugin.core.protocol import RelayMessage, RelayResponse, TaskStatus
from relay_plugin.errors import ProtocolError

logger = logging.getLogger(__name__)

MAX_REMEMBERED_TASKS = 10_000
MODE_HELP = "use 'echo', 'delay:SECONDS', 'fail-first:N', 'fail' or 'async[:SECONDS]'"


@dataclass(frozen=True, slots=True)
class AgentMode:
    """Agent behaviour: ``echo``, ``delay`` (by ``delay_s``), ``fail-first`` (count), ``fail``,
    or ``async``: answer 202 at once and post the result to the task's ``reply_to`` after
    ``delay_s``."""

    kind: str = "echo"
    delay_s: float = 0.0
    fail_first: int = 0


def parse_mode(text: str) -> AgentMode:
    """Parse a mode such as ``echo``, ``delay:0.5``, ``fail-first:2`` or ``fail``."""
    kind, _, argument = text.strip().partition(":")
    if kind in ("", "echo", "fail", "async") and not argument:
        return AgentMode(kind=kind or "echo")
    try:
        if kind in ("delay", "async"):
            seconds = float(argument)
            if seconds >= 0 and math.isfinite(seconds):
                return AgentMode(kind=kind, delay_s=seconds)
        elif kind == "fail-first":
            count = int(argument)
            if count >= 0:
                return AgentMode(kind="fail-first", fail_first=count)
    except ValueError:
        pass
    raise ValueError(f"invalid agent mode {text!r}: {MODE_HELP} (SECONDS and N not negative)")


Outcome = tuple[int, dict[str, Any]]  # HTTP status and JSON body of a task's response


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One ``POST /relay`` request as it arrived, Authorization header included."""

    headers: dict[str, str]
    body: bytes


class RelayAgent:
    """Request handlers, counters and response cache of one agent app."""

    def __init__(self, *, token: str, mode: AgentMode, name: str) -> None:
        self.token = token
        self.mode = mode
        self.name = name
        self.received: list[ReceivedRequest] = []
        self.requests = 0  # valid relay requests, the count that fail-first mode uses
        self.runs = 0  # tasks that actually ran, repeats excluded
        self.canceled: list[str] = []  # task ids of cancel notices received
        self.reports: list[int] = []  # HTTP status of each report posted to a reply_to URL
        self._responses: OrderedDict[str, asyncio.Task[Outcome]] = OrderedDict()
        self._running: set[asyncio.Task[Outcome]] = set()

    async def relay(self, request: web.Request) -> web.Response:
        """Handle ``POST /relay``: check the token, decode, then run or repeat the task."""
        body = await request.read()
        self.received.append(ReceivedRequest(dict(request.headers), body))
        if self.token and not _bearer_matches(request.headers.get("Authorization", ""), self.token):
            return self._reject(401, "missing or wrong 'Authorization: Bearer <token>' header")
        try:
            message = RelayMessage.from_dict(json.loads(body))
        except (ValueError, ProtocolError) as exc:  # JSONDecodeError and UnicodeDecodeError too
            return self._reject(400, f"invalid RelayMessage: {exc}")
        if message.status == TaskStatus.CANCELED:
            return self._cancel(message)
        if not message.content:
            return self._reject(400, "invalid RelayMessage: no text in 'content' or 'message'")

        self.requests += 1
        if self.requests <= self.mode.fail_first:
            reason = f"mode fail-first:{self.mode.fail_first} fails request {self.requests}"
            return self._reject(503, reason)

        key = request.headers.get("Idempotency-Key") or message.task_id
        task = self._responses.get(key) if key else None
        if task is None:
            task = asyncio.get_running_loop().create_task(self._run(message))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            if key:
                self._responses[key] = task
                while len(self._responses) > MAX_REMEMBERED_TASKS:
                    self._responses.popitem(last=False)
        else:
            logger.info("agent %s returns the cached response for task key %r", self.name, key)
        if self.mode.kind == "async":
            accepted = RelayResponse(message.task_id, TaskStatus.WORKING,
                                     timestamp=datetime.now(timezone.utc))  # fmt: skip
            return web.json_response(accepted.to_dict(), status=202)
        # shield: a client that disconnects must not cancel the run that its repeats wait for.
        status, body = await asyncio.shield(task)
        return web.json_response(body, status=status)

    def _cancel(self, message: RelayMessage) -> web.Response:
        """Stop a running task on the sender's cancel notice."""
        self.canceled.append(message.task_id)
        task = self._responses.get(message.task_id)
        if task is not None and not task.done():
            task.cancel()
        logger.info("agent %s canceled task %r", self.name, message.task_id)
        body = RelayResponse(message.task_id, TaskStatus.CANCELED, timestamp=datetime.now(timezone.utc))
        return web.json_response(body.to_dict())

    async def healthz(self, request: web.Request) -> web.Response:
        """Handle ``GET /healthz``."""
        return web.json_response({"ok": True})

    async def cancel_running(self, app: web.Application) -> None:
        """Cancel and await the tasks still running, at shutdown."""
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def _reject(self, status: int, reason: str) -> web.Response:
        logger.warning("agent %s rejected a relay request with %d: %s", self.name, status, reason)
        return web.json_response({"error": reason}, status=status)

    async def _run(self, message: RelayMessage) -> Outcome:
        self.runs += 1
        started = time.perf_counter_ns()
        if self.mode.kind in ("delay", "async"):
            await asyncio.sleep(self.mode.delay_s)
        if self.mode.kind == "async":
            await self._report(message)
            return 202, {}
        failed = self.mode.kind == "fail"
        response = RelayResponse(
            task_id=message.task_id,
            status=TaskStatus.FAILED if failed else TaskStatus.COMPLETED,
            content="" if failed else f"{self.name}: {message.content}",
            timestamp=datetime.now(timezone.utc),
            error=f"agent {self.name!r} runs in mode 'fail' and fails every task" if failed else "",
            duration_ns=time.perf_counter_ns() - started,
        )
        logger.info("agent %s ran task %r: %s", self.name, message.task_id, response.status)
        return (500 if failed else 200), response.to_dict()


    async def _report(self, message: RelayMessage) -> None:
        """Post the finished task to the ``reply_to`` URL in the message's metadata, signed."""
        try:
            reply_to = json.loads(message.metadata or "{}").get("reply_to", "")
        except (ValueError, AttributeError):
            reply_to = ""
        if not reply_to:
            logger.warning("agent %s: task %r has no reply_to; its result is dropped",
                           self.name, message.task_id)  # fmt: skip
            return
        report = RelayMessage(
            task_id=message.task_id, from_=self.name, to=message.from_, content="",
            status=TaskStatus.COMPLETED, response=f"{self.name}: {message.content}",
            created_at=datetime.now(timezone.utc),
        )  # fmt: skip
        body = json.dumps(report.to_dict()).encode()
        headers = {"Content-Type": "application/json", **signed_headers(self.token, body)}
        async with aiohttp.ClientSession() as session:
            async with session.post(reply_to, data=body, headers=headers) as response:
                self.reports.append(response.status)
        logger.info("agent %s reported task %r: HTTP %d", self.name, message.task_id,
                    self.reports[-1])  # fmt: skip


AGENT = web.AppKey("agent", RelayAgent)
RECEIVED = web.AppKey("received", list[ReceivedRequest])


def create_agent_app(
    *, token: str = "", mode: AgentMode | str = "echo", name: str = "echo"
) -> web.Application:
    """Build the agent app; ``name`` prefixes each echoed text (``"echo: hello"``)."""
    agent_mode = parse_mode(mode) if isinstance(mode, str) else mode
    agent = RelayAgent(token=token, mode=agent_mode, name=name)
    app = web.Application()
    app[AGENT] = agent
    app[RECEIVED] = agent.received
    app.router.add_post("/relay", agent.relay)
    app.router.add_get("/healthz", agent.healthz)
    app.on_shutdown.append(agent.cancel_running)
    return app


def _bearer_matches(header: str, token: str) -> bool:
    return hmac.compare_digest(header.encode(), f"Bearer {token}".encode())


async def start_agent(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    token: str = "",
    mode: AgentMode | str = "echo",
    name: str = "echo",
) -> tuple[web.AppRunner, str]:
    """Start an agent on ``host:port`` (0 picks a free port); return its runner and base URL."""
    runner = web.AppRunner(create_agent_app(token=token, mode=mode, name=name))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    return runner, f"http://{host}:{bound_port}"


def run_agent(host: str, port: int, token: str, mode: str) -> None:
    """Serve an agent until interrupted (the ``relay-plugin agent`` command).

    Raises OSError when the address cannot be bound.
    """
    app = create_agent_app(token=token, mode=mode)

    def started(_: str) -> None:
        logger.info("relay agent listening on http://%s:%d/relay, mode %s", host, port, mode)

    web.run_app(app, host=host, port=port, print=started)
