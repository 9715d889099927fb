"""Scenarios about scale: memory with many bindings and relays, and a store of 100,000 bindings."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from relay_plugin.core.store import BindingStore

from common import Figures, Notes, mention, running, user_id
from driver import BenchSimulator, SlackDriver
from profiles import Profile
from stack import agent_child, channel_id, populate, serve_child, wait_healthy
from stats import percentile

# Long enough that no relay of the loaded phase finishes before its memory is read.
IN_FLIGHT_AGENT_DELAY_S = 120.0
IN_FLIGHT_TIMEOUT_S = 60.0
IDLE_SETTLE_S = 1.0
RSS_SAMPLES = 5
# Mentions sent at a time while filling the app; Slack itself spreads its deliveries over time.
SEND_CONCURRENCY = 100


async def memory(profile: Profile, work: Path, notes: Notes) -> Figures:
    """RSS of a fresh app process at idle, then with ``rss_in_flight`` relays awaiting the agent."""
    figures: Figures = {"rss_mb_idle": [], "rss_mb_loaded": []}
    for run in range(profile.runs):
        run_dir = work / f"run{run}"
        async with running(run_dir, agent_mode=f"delay:{IN_FLIGHT_AGENT_DELAY_S:g}",
                           bindings=profile.rss_bindings, RELAY_SHUTDOWN_GRACE_S="0",
                           RELAY_ANSWER_TIMEOUT_S="300") as stack:  # fmt: skip
            # One command pays the first-request costs (auth.test, Bolt's lazy set-up).
            await stack.driver.command("list", channel_id(0))
            await asyncio.sleep(IDLE_SETTLE_S)
            figures["rss_mb_idle"].append(stack.app.rss_mb())

            semaphore = asyncio.Semaphore(SEND_CONCURRENCY)

            async def send(index: int) -> None:
                async with semaphore:
                    await mention(stack, channel_id(index), user_id(index), index, notes)

            await asyncio.gather(*(send(index) for index in range(profile.rss_in_flight)))
            in_flight = await _wait_for_notes(stack.sim, profile.rss_in_flight)
            if in_flight < profile.rss_in_flight:
                notes.add(f"memory run {run}: only {in_flight} of {profile.rss_in_flight} "
                          "relays reached the agent call")  # fmt: skip
            samples = []
            for _ in range(RSS_SAMPLES):
                samples.append(stack.app.rss_mb())
                await asyncio.sleep(0.1)
            figures["rss_mb_loaded"].append(max(samples))
            if stack.sim.answered:
                notes.add(f"memory run {run}: {len(stack.sim.answered)} relays finished early")
        shutil.rmtree(run_dir / "data", ignore_errors=True)
    return figures


async def _wait_for_notes(sim: BenchSimulator, count: int) -> int:
    """Wait until ``count`` working notes are posted; each relay posts one before the agent call."""
    deadline = time.perf_counter() + IN_FLIGHT_TIMEOUT_S
    while sim.working_notes() < count and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    return sim.working_notes()


async def store_scale(profile: Profile, work: Path, notes: Notes) -> Figures:
    """Start-up time and ``/relay bind`` latency with ``store_bindings`` bindings stored.

    The same figures with an empty store show what the stored bindings cost.
    """
    figures: Figures = {"load_s_100k": [], "bind_p50_ms_100k": [], "bind_p99_ms_100k": [],
                        "load_s_empty": [], "bind_p50_ms_empty": [],
                        "populate_s_100k": []}  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    sim = BenchSimulator()
    await sim.start()
    agent = agent_child("echo", work)
    try:
        await agent.start()
        empty_dir = work / "empty"
        empty_dir.mkdir(exist_ok=True)
        for run in range(profile.runs):
            figures["load_s_empty"].append(await _start_time(sim, empty_dir))
            binds = await _bind_times(sim, empty_dir, agent.url, run, profile.binds, notes)
            figures["bind_p50_ms_empty"].append(percentile(binds, 50))
        full_dir = work / "full"
        seconds = populate(full_dir / "data", agent.url, profile.store_bindings,
                           bots_per_channel=profile.store_bots_per_channel)  # fmt: skip
        figures["populate_s_100k"].append(seconds)
        expected = profile.store_bindings
        for run in range(profile.runs):
            figures["load_s_100k"].append(await _start_time(sim, full_dir))
            binds = await _bind_times(sim, full_dir, agent.url, run, profile.binds, notes)
            expected += profile.binds + 1
            with BindingStore(full_dir / "data") as store:
                stored = store.count()
            if stored != expected:
                notes.add(f"store run {run}: {stored} bindings stored, expected {expected}; "
                          "some binds were refused or failed")  # fmt: skip
            figures["bind_p50_ms_100k"].append(percentile(binds, 50))
            figures["bind_p99_ms_100k"].append(percentile(binds, 99))
    finally:
        await agent.stop()
        await sim.stop()
    return figures


async def _start_time(sim: BenchSimulator, work: Path) -> float:
    """Start serve on ``work``/data and return the seconds from spawn to a healthy /healthz."""
    app = serve_child(sim.api_url, work)
    try:
        url = await app.start()
        return await wait_healthy(url) - app.started_at
    finally:
        await app.stop()


async def _bind_times(
    sim: BenchSimulator, work: Path, agent_url: str, run: int, count: int, notes: Notes
) -> list[float]:
    """Run ``/relay bind`` ``count`` times as the admin in existing channels; return ack ms."""
    app = serve_child(sim.api_url, work)
    times: list[float] = []
    try:
        await wait_healthy(await app.start())
        async with SlackDriver(app.url, sim) as driver:
            # The first bind looks the admin up with users.info; later ones use the cache.
            await driver.command(f"bind warm{run} {agent_url}", channel_id(0))
            for index in range(count):
                channel = channel_id(index * 7 + 1)
                sent = await driver.command(f"bind new{run}-{index} {agent_url}", channel)
                if sent.status != 200:
                    notes.add(f"bind {index} in {channel}: HTTP {sent.status}")
                    continue
                times.append(sent.ack_s * 1000)
    finally:
        await app.stop()
    return times
