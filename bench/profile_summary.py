"""Summarize py-spy raw (collapsed) stack files: where the sampled process spent its time.

Usage: ``python bench/profile_summary.py FILE... [--top N] [--loop-only]``. Prints the share of
samples per library (by the file path of the innermost frame) and the functions with the largest
self and inclusive shares. Samples that end in ``select``, ``poll`` or ``epoll`` (a thread waiting
for I/O) count as idle. py-spy leaves most idle samples out unless it runs with ``--idle``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>[^()]*?)(?::\d+)?\)$")
_IDLE_FUNCTIONS = {"select", "poll", "epoll", "_run_once"}
_LOOP_FRAME = "run_forever (asyncio/base_events.py"
_LIBRARIES = ("relay_plugin", "slack_bolt", "slack_sdk", "aiohttp", "aiobreaker", "backoff",
              "multidict", "yarl", "asyncio", "logging", "sqlite3", "json", "concurrent",
              "threading", "http", "urllib", "email", "uuid", "ssl", "socket")  # fmt: skip


def library(path: str) -> str:
    """Return the package a frame's file belongs to, or 'other'."""
    parts = path.replace("\\", "/").split("/")
    for name in _LIBRARIES:
        if name in parts[:-1] or parts[-1] == f"{name}.py":
            return name
    return "other"


def read_stacks(paths: list[Path]) -> Counter[tuple[str, ...]]:
    """Return sample counts per stack (outermost frame first)."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def print_summary(stacks: Counter[tuple[str, ...]], top: int) -> None:
    """Print the shares of busy samples by library and by function."""
    idle = 0
    by_library: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        inner = _FRAME.match(stack[-1])
        function = inner.group("function") if inner else ""
        if function.rpartition(".")[2] in _IDLE_FUNCTIONS:
            idle += count
            continue
        by_library[library(inner.group("path") if inner else "")] += count
        exclusive[stack[-1]] += count
        for frame in set(stack):
            inclusive[frame] += count

    total = sum(stacks.values())
    busy = max(total - idle, 1)
    print(f"{total} samples, {idle} idle ({idle / total:.0%}), {busy} busy")
    print("\nself time by library (share of busy samples):")
    for name, count in by_library.most_common():
        print(f"  {count / busy:6.1%}  {name}")
    print(f"\ntop {top} functions by self share of busy samples:")
    for frame, count in exclusive.most_common(top):
        print(f"  {count / busy:6.1%}  {frame}")
    print(f"\ntop {top} functions by inclusive share of busy samples:")
    for frame, count in inclusive.most_common(top):
        print(f"  {count / busy:6.1%}  {frame}")


def main(argv: list[str] | None = None) -> int:
    """Read the files given on the command line and print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="py-spy record --format raw outputs")
    parser.add_argument("--top", type=int, default=30, help="functions to list (default 30)")
    parser.add_argument("--loop-only", action="store_true",
                        help="count only samples of the thread that runs the asyncio event loop")
    args = parser.parse_args(argv)

    stacks = read_stacks(args.files)
    if args.loop_only:
        stacks = Counter({stack: count for stack, count in stacks.items()
                          if any(_LOOP_FRAME in frame for frame in stack)})  # fmt: skip
    if not stacks:
        print("profile_summary: no samples in the given files", file=sys.stderr)
        return 1
    print_summary(stacks, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
