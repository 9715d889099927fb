"""The benchmark script still runs end to end: bench/run.py --smoke, a few relays per scenario.

No figure is compared with a target here; timings on a shared test machine prove nothing.
"""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEYS = [
    "ack_p99_ms", "overhead_p50_ms", "overhead_p99_ms", "relays_per_s",
    "slow_agent_relays_per_s", "rss_mb_idle", "rss_mb_loaded", "bind_p50_ms_100k",
    "load_s_100k", "naive_relays_per_s", "speedup",
]  # fmt: skip
BASELINE_KEYS = ["naive_relays_per_s", "speedup"]
HAS_REQUESTS = importlib.util.find_spec("requests") is not None


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Run the smoke benchmark once (with the naive baseline when requests is installed)."""
    work = tmp_path_factory.mktemp("bench")
    argv = [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--work-dir", str(work)]
    if not HAS_REQUESTS:
        argv.append("--no-baseline")
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)


def last_line(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(300)
def test_smoke_exits_zero(smoke):
    output = f"stdout:\n{smoke.stdout[-3000:]}\nstderr:\n{smoke.stderr[-3000:]}"
    assert smoke.returncode == 0, output


@pytest.mark.timeout(300)
def test_last_line_has_keys(smoke):
    assert list(last_line(smoke)) == KEYS


@pytest.mark.timeout(300)
def test_figures_are_numbers(smoke):
    figures = last_line(smoke)
    for key in KEYS:
        if key in BASELINE_KEYS:
            continue
        value = figures[key]
        assert isinstance(value, (int, float)), f"{key} is {value!r}"
        assert math.isfinite(value), f"{key} is {value!r}"
        assert value > 0, f"{key} is {value!r}"


@pytest.mark.timeout(300)
@pytest.mark.skipif(not HAS_REQUESTS, reason="the naive baseline needs the bench extra (requests)")
def test_baseline_figures_are_numbers(smoke):
    figures = last_line(smoke)
    for key in BASELINE_KEYS:
        value = figures[key]
        assert isinstance(value, (int, float)), f"{key} is {value!r}"
        assert value > 0, f"{key} is {value!r}"


@pytest.mark.timeout(300)
def test_table_states_machine(smoke):
    assert "machine: " in smoke.stdout
    assert "command: " in smoke.stdout
