"""Benchmark of relay-plugin: start the real ``relay-plugin serve``, load it, print the figures.

Run from the repository root: ``python bench/run.py`` (about 5 minutes), ``--quick`` (under a
minute) or ``--smoke`` (a few relays, only to prove that every scenario runs). The driver (this
process) hosts the Slack simulator and sends signed Slack requests; the app, the reference
agent and the naive baseline are child processes. Everything listens on 127.0.0.1.

The figures go to stdout as a table, and the last line is one JSON object. Progress goes to
stderr. The exit code is 1 when a request failed or an answer was lost, because the figures
then describe something other than the normal path.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import importlib.util
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path

from common import Figures, Notes
from profiles import PROFILES, Profile
from relay_scenarios import ack_latency, overhead, slow_agent, throughput
from scale_scenarios import memory, store_scale
from stack import PROFILE_DIR_VARIABLE
from stats import background_cores, cpu_snapshot, median

# The keys of the JSON line, in order, with the target each must meet on a 2-core machine.
TARGETS: dict[str, tuple[str, float]] = {
    "ack_p99_ms": ("<", 50),
    "overhead_p50_ms": ("<", 3),
    "overhead_p99_ms": ("", 0),
    "relays_per_s": (">=", 300),
    "slow_agent_relays_per_s": (">=", 25),
    "rss_mb_idle": ("", 0),
    "rss_mb_loaded": ("<", 150),
    "bind_p50_ms_100k": ("<", 5),
    "load_s_100k": ("<", 2),
    "naive_relays_per_s": ("", 0),
    "speedup": (">=", 5),
}

# Above this much CPU used by other processes (in cores), the report warns that they interfered.
BACKGROUND_WARNING_CORES = 0.2

Scenario = Callable[[Profile, Path, Notes], Awaitable[Figures]]


def scenarios(with_baseline: bool) -> dict[str, Scenario]:
    """Return the scenarios by name, in the order they run."""
    chosen: dict[str, Scenario] = {
        "ack": ack_latency,
        "overhead": overhead,
        "throughput": throughput,
    }
    if with_baseline:
        chosen["naive"] = functools.partial(throughput, naive=True)
    chosen["slow"] = slow_agent
    if with_baseline:
        chosen["naive_slow"] = functools.partial(slow_agent, naive=True)
    chosen.update(memory=memory, store=store_scale)
    return chosen


def machine() -> dict[str, str]:
    """Describe the machine the figures were measured on."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} cores, {model}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
    }


def summarize(figures: Figures) -> dict[str, float | None]:
    """Return the median of each figure, with ``speedup`` added; None where nothing was measured."""
    medians = {key: median(values) for key, values in figures.items()}
    ours, naive = medians.get("relays_per_s", math.nan), medians.get("naive_relays_per_s", math.nan)
    medians["speedup"] = ours / naive if naive and math.isfinite(naive) else math.nan
    slow = medians.get("slow_agent_relays_per_s", math.nan)
    naive_slow = medians.get("naive_slow_agent_relays_per_s", math.nan)
    if naive_slow and math.isfinite(naive_slow):
        medians["slow_agent_speedup"] = slow / naive_slow
    return {key: (value if math.isfinite(value) else None) for key, value in medians.items()}


def verdict(key: str, value: float | None) -> str:
    """Return 'ok', 'MISSED' or '' for a figure against its target."""
    op, target = TARGETS.get(key, ("", 0))
    if not op or value is None:
        return ""
    met = value < target if op == "<" else value >= target
    return "ok" if met else "MISSED"


def print_report(info: dict[str, str], command: str, profile: Profile, figures: Figures,
                 summary: dict[str, float | None], notes: Notes) -> None:  # fmt: skip
    """Print the table of figures, the problems seen, then the JSON line last."""
    print(f"relay-plugin benchmark ({profile.name}), {info['date']}")
    print(f"machine: {info['cpu']}; {info['python']}; {info['os']}")
    print(f"command: {command}")
    print("children: python -m relay_plugin serve, bench/agent_server.py, "
          "bench/baseline/naive_app.py")  # fmt: skip
    sizes = dataclasses.asdict(profile)
    print("sizes: " + ", ".join(f"{key}={value}" for key, value in sizes.items() if key != "name"))
    print(f"\n{'figure':<34} {'median':>9}  {'target':<8} {'':<6}  runs")
    for key in [*TARGETS, *sorted(set(summary) - set(TARGETS))]:
        value = summary.get(key)
        op, target = TARGETS.get(key, ("", 0))
        median_text = "-" if value is None else f"{value:.2f}"
        goal = f"{op} {target:g}" if op else ""
        runs = ", ".join(f"{v:.2f}" for v in figures.get(key, []))
        print(f"{key:<34} {median_text:>9}  {goal:<8} {verdict(key, value):<6}  {runs}")
    background = summary.get("background_cores")
    if background is not None and background > BACKGROUND_WARNING_CORES:
        print(f"warning: other processes kept {background:.2f} cores busy on average, so these "
              "figures are lower than on an idle machine")  # fmt: skip
    for line in notes.lines:
        print(f"problem: {line}")
    print(json.dumps({key: _rounded(summary.get(key)) for key in TARGETS}))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def run(
    profile: Profile, chosen: dict[str, Scenario], work: Path
) -> tuple[Figures, Notes]:
    """Run the chosen scenarios one after another; return every figure and the problems seen.

    ``background_cores`` is the CPU that processes outside the benchmark used meanwhile, in
    cores: other work on the machine competes for the same 2 cores and lowers every figure.
    """
    figures: Figures = {"background_cores": []}
    notes = Notes()
    for name, scenario in chosen.items():
        started = time.perf_counter()
        before = cpu_snapshot()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        figures.update(await scenario(profile, work / name, notes))
        elapsed = time.perf_counter() - started
        figures["background_cores"].append(background_cores(before, cpu_snapshot(), elapsed))
        print(f"bench: {name} took {elapsed:.1f} s", file=sys.stderr, flush=True)
    return figures, notes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="one run per figure and shorter loads (under a minute)")
    size.add_argument("--smoke", action="store_true",
                      help="a few relays per scenario, to check that the script works")
    parser.add_argument("--runs", type=int,
                        help="runs per figure (default 3, or 1 with --quick and --smoke)")
    parser.add_argument("--only", nargs="+", metavar="SCENARIO",
                        help="run only these scenarios (ack, overhead, throughput, naive, slow, "
                        "naive_slow, memory, store)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the naive baseline, which needs the 'requests' package")
    parser.add_argument("--work-dir", type=Path,
                        help="keep logs and data in this folder instead of a temporary one")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="record each app process with py-spy into DIR "
                        "(summarize with bench/profile_summary.py)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    args = parse_args(argv)
    profile = PROFILES["full"]
    if args.quick:
        profile = PROFILES["quick"]
    elif args.smoke:
        profile = PROFILES["smoke"]
    if args.runs is not None:
        if args.runs < 1:
            print(f"bench: --runs {args.runs} is invalid; give 1 or more", file=sys.stderr)
            return 2
        profile = dataclasses.replace(profile, runs=args.runs)
    with_baseline = not args.no_baseline
    if with_baseline and importlib.util.find_spec("requests") is None:
        print("bench: the naive baseline needs 'requests'; install the bench extra "
              "(pip install -e '.[bench]') or pass --no-baseline", file=sys.stderr)  # fmt: skip
        return 2
    chosen = scenarios(with_baseline)
    if args.only:
        unknown = sorted(set(args.only) - set(chosen))
        if unknown:
            print(f"bench: unknown scenario(s) {', '.join(unknown)}; "
                  f"choose from {', '.join(chosen)}", file=sys.stderr)  # fmt: skip
            return 2
        chosen = {name: chosen[name] for name in chosen if name in args.only}

    if args.profile is not None:
        os.environ[PROFILE_DIR_VARIABLE] = str(args.profile.resolve())
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    info = machine()
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        figures, notes = asyncio.run(run(profile, chosen, args.work_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="relay-bench-") as temp:
            figures, notes = asyncio.run(run(profile, chosen, Path(temp)))
    print_report(info, command, profile, figures, summarize(figures), notes)
    return 1 if notes.lines else 0


if __name__ == "__main__":
    sys.exit(main())
