"""Load and soak run: waves of concurrent mentions across many channels against a slow agent.

Every mention must end with exactly one final reply in its thread: none lost, none doubled.
The app's resident memory is sampled after every wave, so a leak shows as a rising line.

    .venv/bin/python bench/soak.py                   # 3 minutes, waves of 300 mentions
    .venv/bin/python bench/soak.py --duration 30 --wave 100

Everything runs on 127.0.0.1; the run stops by itself after ``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import USERS, Notes, mention, running, user_id
from driver import BenchSimulator
from stack import channel_id

CHANNELS = 200
WAVE_TIMEOUT_S = 60.0


class CountingSimulator(BenchSimulator):
    """BenchSimulator that also counts, per thread, the app's posts and the answers it shows."""

    def __init__(self) -> None:
        super().__init__(users=USERS)
        self.posts: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()

    def post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        reply = super().post_message(params)
        if reply.get("ok"):
            self.posts[str(params.get("thread_ts") or reply["ts"])] += 1
        return reply

    def _observe(self, thread_ts: str, params: dict[str, Any]) -> None:
        if _shows_answer(params):
            self.answers[thread_ts] += 1
        super()._observe(thread_ts, params)


def _shows_answer(params: dict[str, Any]) -> bool:
    blocks = params.get("blocks")
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    return any(block.get("type") == "markdown" for block in blocks or [])


async def soak(duration_s: float, wave: int, agent_delay_s: float, work: Path) -> int:
    sim = CountingSimulator()
    notes = Notes()
    env = {
        "RELAY_USER_IN_FLIGHT": "0", "RELAY_USER_PER_MINUTE": "0",
        "RELAY_CHANNEL_IN_FLIGHT": "0", "RELAY_CHANNEL_PER_MINUTE": "0",
        "RELAY_THREAD_BUDGET": "0", "RELAY_ENDPOINT_CONCURRENCY": "1000",
        "RELAY_ENDPOINT_QUEUE": "10000",
    }  # fmt: skip
    async with running(work, agent_mode=f"delay:{agent_delay_s:g}", bindings=CHANNELS,
                       sim=sim, **env) as stack:  # fmt: skip
        rss = [stack.app.rss_mb()]
        threads: list[str] = []
        started = time.monotonic()
        number = 0
        while time.monotonic() - started < duration_s:
            sent = await asyncio.gather(*(
                mention(stack, channel_id(index % CHANNELS), user_id(index), number + index, notes)
                for index in range(wave)
            ))  # fmt: skip
            number += wave
            wave_threads = [item.thread_ts for item in sent if item is not None]
            threads += wave_threads
            if not await sim.wait_answered(len(threads), WAVE_TIMEOUT_S):
                notes.add(f"wave ending at mention {number}: answers missing after {WAVE_TIMEOUT_S:g} s")
            rss.append(stack.app.rss_mb())
            print(f"  {time.monotonic() - started:6.1f} s  mentions {len(threads):6d}  "
                  f"answered {len(sim.answered):6d}  rss {rss[-1]:6.1f} MB", flush=True)
        await asyncio.sleep(1.0)  # a doubled reply would arrive in this time
        lost = [ts for ts in threads if ts not in sim.answered]
        doubled = [ts for ts in threads if sim.posts[ts] != 1 or sim.answers[ts] > 1]
        elapsed = time.monotonic() - started
    half = max(len(rss) // 2, 1)
    report = {
        "mentions": len(threads),
        "answered": len(threads) - len(lost),
        "lost": len(lost),
        "doubled": len(doubled),
        "relays_per_s": round((len(threads) - len(lost)) / elapsed, 1),
        "rss_mb_first": round(rss[0], 1),
        "rss_mb_last": round(rss[-1], 1),
        "rss_mb_max": round(max(rss), 1),
        "rss_mb_median_first_half": round(statistics.median(rss[:half]), 1),
        "rss_mb_median_second_half": round(statistics.median(rss[half:]), 1),
        "problems": len(notes.lines),
    }
    for line in notes.lines[:10]:
        print(f"problem: {line}")
    print(json.dumps(report))
    return 0 if not lost and not doubled and not notes.lines else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load (default 180)")
    parser.add_argument("--wave", type=int, default=300, help="mentions sent at once (default 300)")
    parser.add_argument("--agent-delay", type=float, default=2.0,
                        help="seconds the agent takes per relay (default 2)")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relay-soak-") as work:
        return asyncio.run(soak(args.duration, args.wave, args.agent_delay, Path(work)))


if __name__ == "__main__":
    sys.exit(main())
