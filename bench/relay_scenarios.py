"""Scenarios about relays: acknowledgement latency, overhead, throughput, a slow agent."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path

from common import Figures, Notes, burst, relay_once, running, user_id, warm_up
from driver import Sent, SlackDriver
from profiles import Profile
from stack import agent_timings, channel_id
from stats import percentile

COMMANDS = ("list", "status", "test echo", "bind")
SLOW_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class AckRequest:
    """One request of the acknowledgement scenario: a mention or a ``/relay`` command."""

    kind: str  # "mention" or "command"
    channel: str
    user: str
    number: int
    command: str = ""


def ack_requests(profile: Profile, run: int, agent_url: str) -> list[AckRequest]:
    """Return one run's requests: two mentions, then a command, cycling through COMMANDS."""
    requests = []
    for index in range(profile.ack_requests):
        channel = channel_id(index % profile.ack_channels)
        number = run * profile.ack_requests + index
        if index % 3 < 2:
            requests.append(AckRequest("mention", channel, user_id(index), number))
            continue
        command = COMMANDS[index // 3 % len(COMMANDS)]
        if command == "bind":
            command = f"bind extra{number} {agent_url}"
        requests.append(AckRequest("command", channel, user_id(index), number, command))
    return requests


async def send_ack_request(driver: SlackDriver, request: AckRequest) -> Sent:
    """Send one request of the acknowledgement scenario; commands come from the admin."""
    if request.kind == "command":
        return await driver.command(request.command, request.channel)
    return await driver.mention(request.channel, request.user, request.number)


async def ack_latency(profile: Profile, work: Path, notes: Notes) -> Figures:
    """Ack times of mentions and ``/relay`` commands at a fixed arrival rate; the agent takes 30 s.

    Relays are never awaited: they pile up waiting for the agent, and stopping the app with a
    grace of 0 s cancels them.
    """
    figures: Figures = {"ack_p99_ms": [], "ack_p50_ms": [], "mention_ack_p99_ms": [],
                        "command_ack_p99_ms": []}  # fmt: skip
    agent_mode = f"delay:{profile.ack_agent_delay_s:g}"
    async with running(work, agent_mode=agent_mode, bindings=profile.ack_channels,
                       RELAY_SHUTDOWN_GRACE_S="0") as stack:  # fmt: skip
        # Not measured: the first request pays for auth.test and Bolt's lazy set-up.
        await stack.driver.command("list", channel_id(0))
        await stack.driver.mention(channel_id(0), user_id(0), -1)
        for run in range(profile.runs):
            requests = ack_requests(profile, run, stack.agent.url)
            sent = await _open_loop(stack.driver, requests, profile.ack_rate_per_s)
            for request, result in zip(requests, sent):
                if result.status != 200:
                    notes.add(f"ack run {run}: {request.kind} {request.command!r} answered "
                              f"HTTP {result.status}")  # fmt: skip
            by_kind: dict[str, list[float]] = {"mention": [], "command": []}
            for request, result in zip(requests, sent):
                by_kind[request.kind].append(result.ack_s * 1000)
            every = by_kind["mention"] + by_kind["command"]
            figures["ack_p99_ms"].append(percentile(every, 99))
            figures["ack_p50_ms"].append(percentile(every, 50))
            figures["mention_ack_p99_ms"].append(percentile(by_kind["mention"], 99))
            figures["command_ack_p99_ms"].append(percentile(by_kind["command"], 99))
    return figures


async def _open_loop(
    driver: SlackDriver, requests: list[AckRequest], rate_per_s: float
) -> list[Sent]:
    """Send request i at i / rate seconds whatever the earlier ones are doing; return results.

    A fixed arrival rate keeps a slow response from delaying the next request, which would
    hide queueing from the measured latency.
    """
    started = time.perf_counter()
    tasks = []
    for index, request in enumerate(requests):
        delay = started + index / rate_per_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send_ack_request(driver, request)))
    return list(await asyncio.gather(*tasks))


async def overhead(profile: Profile, work: Path, notes: Notes) -> Figures:
    """Event sent to answer posted, minus the agent's own time, one relay at a time.

    The agent's own time runs from a relay's arrival at the agent to its response being ready,
    as the agent records it. The parts show where the rest goes: event sent to the app's first
    post in the thread (the working note), that post to the relay's arrival at the agent, and
    the agent's response to the answer in the thread.
    """
    parts = ("overhead", "to_note", "note_to_agent", "agent_to_answer")
    figures: Figures = {"overhead_p50_ms": [], "overhead_p99_ms": [], "agent_own_p50_ms": []}
    figures.update({f"overhead_{part}_p50_ms": [] for part in parts[1:]})
    async with running(work) as stack:
        await warm_up(stack, notes)
        for run in range(profile.runs):
            relays = []
            for index in range(profile.overhead_relays):
                number = 1000 + run * profile.overhead_relays + index
                sent, answered_at = await relay_once(
                    stack, channel_id(0), user_id(index), number, notes
                )
                if sent is not None and answered_at is not None:
                    relays.append((number, sent, answered_at))
            timings = await agent_timings(stack.agent.url)
            samples: dict[str, list[float]] = {part: [] for part in (*parts, "agent_own")}
            for number, sent, answered_at in relays:
                arrived, responded = timings.get(f"bench-relay {number}", (math.nan, math.nan))
                noted = stack.sim.first_post[sent.thread_ts]
                own = responded - arrived
                values = (answered_at - sent.sent_at - own, noted - sent.sent_at,
                          arrived - noted, answered_at - responded, own)  # fmt: skip
                for part, seconds in zip(samples, values):
                    samples[part].append(seconds * 1000)
            if any(math.isnan(value) for value in samples["agent_own"]):
                notes.add(f"overhead run {run}: the agent recorded no time for some relays")
            figures["overhead_p50_ms"].append(percentile(samples["overhead"], 50))
            figures["overhead_p99_ms"].append(percentile(samples["overhead"], 99))
            figures["agent_own_p50_ms"].append(percentile(samples["agent_own"], 50))
            for part in parts[1:]:
                figures[f"overhead_{part}_p50_ms"].append(percentile(samples[part], 50))
    return figures


async def throughput(
    profile: Profile, work: Path, notes: Notes, *, naive: bool = False
) -> Figures:
    """Completed relays per second with ``throughput_concurrency`` mentions always in flight.

    Each worker mentions the bot in its own channel, waits for the answer, and repeats. Answers
    are counted after a warm-up, over ``throughput_s`` seconds. CPU time per relay of each
    process shows which one limits the rate.
    """
    prefix = "naive_" if naive else ""
    names = ("app", "agent", "driver")
    figures: Figures = {f"{prefix}relays_per_s": []}
    figures.update({f"{prefix}{name}_cpu_ms_per_relay": [] for name in names})
    concurrency = profile.throughput_concurrency
    async with running(work, bindings=concurrency, naive=naive) as stack:
        await warm_up(stack, notes)
        for run in range(profile.runs):
            started = time.perf_counter()
            measure_from = started + profile.throughput_warmup_s
            deadline = measure_from + profile.throughput_s
            answers: list[float] = []

            async def worker(slot: int) -> None:
                number = (run * concurrency + slot) * 1_000_000
                while time.perf_counter() < deadline:
                    number += 1
                    _, answered_at = await relay_once(
                        stack, channel_id(slot), user_id(slot), number, notes
                    )
                    if answered_at is not None:
                        answers.append(answered_at)

            cpu_before = (stack.app.cpu_s(), stack.agent.cpu_s(), time.process_time())
            await asyncio.gather(*(worker(slot) for slot in range(concurrency)))
            cpu_after = (stack.app.cpu_s(), stack.agent.cpu_s(), time.process_time())
            counted = sum(measure_from <= t <= deadline for t in answers)
            figures[f"{prefix}relays_per_s"].append(counted / profile.throughput_s)
            for name, before, after in zip(names, cpu_before, cpu_after):
                per_relay_ms = (after - before) * 1000 / max(len(answers), 1)
                figures[f"{prefix}{name}_cpu_ms_per_relay"].append(per_relay_ms)
    return figures


async def slow_agent(
    profile: Profile, work: Path, notes: Notes, *, naive: bool = False
) -> Figures:
    """Relays per second for ``slow_mentions`` mentions sent at once to an agent taking 2 s.

    The rate is answers over the time from the first send to the last answer. The naive
    baseline cannot finish in reasonable time, so it gets ``naive_slow_window_s`` seconds and
    its rate is the answers within them. Each run has fresh processes, because the baseline
    would still be working off the previous run's mentions.
    """
    key = "naive_slow_agent_relays_per_s" if naive else "slow_agent_relays_per_s"
    figures: Figures = {key: []}
    count = profile.slow_mentions
    window_s = profile.naive_slow_window_s if naive else SLOW_WINDOW_S
    for run in range(profile.runs):
        agent_mode = f"delay:{profile.slow_agent_delay_s:g}"
        async with running(work / f"run{run}", agent_mode=agent_mode, bindings=count,
                           naive=naive) as stack:  # fmt: skip
            started, answers = await burst(stack, count, 1_000 * (run + 1), window_s, notes)
        if len(answers) == count:
            figures[key].append(count / (max(answers) - started))
            continue
        figures[key].append(len(answers) / window_s)
        if not naive:
            notes.add(f"slow agent run {run}: {count - len(answers)} of {count} mentions "
                      f"unanswered after {window_s:g} s")  # fmt: skip
    return figures
