"""Percentiles and medians of measured values."""

from __future__ import annotations

import math
import os
import resource
import statistics
from dataclasses import dataclass
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    """Return the ``q``-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: list[float]) -> float:
    """Return the median of the finite values; NaN when there are none."""
    finite = [value for value in values if math.isfinite(value)]
    return statistics.median(finite) if finite else math.nan


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """Busy CPU seconds of the whole machine and of this process with its finished children."""

    machine_s: float
    own_s: float


def cpu_snapshot() -> CpuSnapshot:
    """Read the machine's busy time from /proc/stat and this process tree's from getrusage."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    machine_s = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    own_s = 0.0
    for scope in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(scope)
        own_s += usage.ru_utime + usage.ru_stime
    return CpuSnapshot(machine_s, own_s)


def background_cores(before: CpuSnapshot, after: CpuSnapshot, wall_s: float) -> float:
    """Return the cores that other processes kept busy on average between two snapshots.

    Children count once they are reaped, so take ``after`` when every child has exited.
    """
    other_s = (after.machine_s - before.machine_s) - (after.own_s - before.own_s)
    return max(other_s, 0.0) / wall_s if wall_s > 0 else math.nan
