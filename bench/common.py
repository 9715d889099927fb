"""What every scenario uses: a running stack, one relay, and the record of problems seen.

Times come from ``time.perf_counter`` in the driver process. A scenario returns ``Figures``: one
value per run for each figure's name. ``Notes`` collects what went wrong (failed requests, lost
answers), so that run.py reports it instead of averaging it away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from driver import BenchSimulator, Sent, SlackDriver
from stack import Child, agent_child, channel_id, naive_child, populate, serve_child, wait_healthy

ANSWER_TIMEOUT_S = 30.0
USERS = 100

Figures = dict[str, list[float]]


@dataclass
class Notes:
    """Problems seen during the benchmark, each a line for the report."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        """Record a problem."""
        self.lines.append(line)


@dataclass
class BenchStack:
    """The simulator, the agent and the app under test, with a driver aimed at the app."""

    sim: BenchSimulator
    agent: Child
    app: Child
    driver: SlackDriver


@asynccontextmanager
async def running(
    work: Path,
    *,
    agent_mode: str = "echo",
    bindings: int = 1,
    naive: bool = False,
    sim: BenchSimulator | None = None,
    **env: str,
) -> AsyncIterator[BenchStack]:
    """Start simulator, agent and app (the plugin, or the naive baseline); stop them on exit.

    The plugin's store gets ``bindings`` bindings of the bench bot, one per channel, before it
    starts. ``env`` overrides the plugin's environment. ``sim`` replaces the default simulator.
    """
    work.mkdir(parents=True, exist_ok=True)
    sim = sim or BenchSimulator(users=USERS)
    await sim.start()
    agent = agent_child(agent_mode, work)
    app: Child | None = None
    try:
        await agent.start()
        if naive:
            app = naive_child(sim.api_url, agent.url, work)
            await app.start()
        else:
            populate(work / "data", agent.url, bindings)
            app = serve_child(sim.api_url, work, **env)
            await wait_healthy(await app.start())
        async with SlackDriver(app.url, sim) as driver:
            yield BenchStack(sim, agent, app, driver)
    finally:
        # The app goes first: on SIGTERM it still posts to the simulator and talks to the agent.
        if app is not None:
            await app.stop()
        await agent.stop()
        await sim.stop()


def user_id(index: int) -> str:
    """Return bench user ``index`` (U1000, U1001, ...), wrapping around after USERS users."""
    return f"U{1000 + index % USERS}"


async def mention(
    stack: BenchStack, channel: str, user: str, number: int, notes: Notes
) -> Sent | None:
    """Send one mention; return it, or None after noting a failed request or a non-200 ack."""
    try:
        sent = await stack.driver.mention(channel, user, number)
    except (aiohttp.ClientError, TimeoutError) as exc:
        notes.add(f"mention {number} in {channel}: request failed: {exc!r}")
        return None
    if sent.status != 200:
        notes.add(f"mention {number} in {channel}: HTTP {sent.status} {sent.body[:120]!r}")
        return None
    return sent


async def answer_time(
    stack: BenchStack, sent: Sent, timeout: float, notes: Notes | None
) -> float | None:
    """Wait for the answer in the mention's thread; return its time, or None (noted) on timeout."""
    try:
        return await asyncio.wait_for(stack.sim.expect(sent.thread_ts), timeout)
    except TimeoutError:
        if notes is not None:
            last = stack.sim.other_posts.get(sent.thread_ts, "nothing")
            notes.add(f"mention in thread {sent.thread_ts}: no answer in {timeout:g} s "
                      f"(last post in the thread: {last[:120]!r})")  # fmt: skip
        return None


async def relay_once(
    stack: BenchStack, channel: str, user: str, number: int, notes: Notes
) -> tuple[Sent | None, float | None]:
    """Mention the bot and wait for the answer; return the request and the answer time."""
    sent = await mention(stack, channel, user, number, notes)
    if sent is None:
        return None, None
    return sent, await answer_time(stack, sent, ANSWER_TIMEOUT_S, notes)


async def warm_up(stack: BenchStack, notes: Notes, count: int = 3) -> None:
    """Relay a few mentions, so first-request costs (auth.test, lazy imports) are paid."""
    for number in range(count):
        await relay_once(stack, channel_id(0), user_id(number), number, notes)


async def burst(
    stack: BenchStack, count: int, first_number: int, window_s: float, notes: Notes
) -> tuple[float, list[float]]:
    """Send ``count`` mentions at once, one per channel; return the start and the answer times.

    Answers are awaited up to ``window_s`` after the start. The ones still missing then are left
    out without a note, because the caller measures how many a design completes in time.
    """
    started = time.perf_counter()
    sent = await asyncio.gather(*(
        mention(stack, channel_id(index), user_id(index), first_number + index, notes)
        for index in range(count)
    ))  # fmt: skip
    remaining = max(started + window_s - time.perf_counter(), 0.001)
    times = await asyncio.gather(*(
        answer_time(stack, item, remaining, None) for item in sent if item is not None
    ))  # fmt: skip
    return started, [t for t in times if t is not None]
