"""Child processes of the benchmark: the real ``relay-plugin serve``, the agent, the naive baseline.

Each child listens on 127.0.0.1 with a port picked by the kernel, writes its log to a file and
logs a ``listening on http://127.0.0.1:PORT`` line, which is how the driver learns the port.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from relay_plugin.core.store import BindingStore, BotBinding

from driver import ADMIN_USER, BOT_NAME, BOT_TOKEN, SIGNING_SECRET

BENCH_DIR = Path(__file__).resolve().parent
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
_LOG_POLL_S = 0.002
PROFILE_DIR_VARIABLE = "BENCH_PROFILE_DIR"

# Fair-use limits are raised or turned off (0) so that the figures show the plugin's own
# capacity, not its per-user, per-channel and per-endpoint quotas.
THROUGHPUT_LIMITS = {
    "RELAY_USER_IN_FLIGHT": "0",
    "RELAY_USER_PER_MINUTE": "0",
    "RELAY_CHANNEL_IN_FLIGHT": "0",
    "RELAY_CHANNEL_PER_MINUTE": "0",
    "RELAY_ENDPOINT_CONCURRENCY": "1000",
    "RELAY_ENDPOINT_QUEUE": "10000",
}


def clean_env() -> dict[str, str]:
    """Return this process's environment without Slack or relay settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "RELAY_"))}


def serve_env(api_url: str, data_dir: Path, **overrides: str) -> dict[str, str]:
    """Return the environment of a ``relay-plugin serve`` wired to the simulator."""
    env = clean_env()
    env.update(
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=api_url,
        RELAY_DATA_DIR=str(data_dir),
        HOST="127.0.0.1",
        PORT="0",
        RELAY_ALLOWED_HOSTS="127.0.0.1,::1",
        RELAY_LOG_LEVEL="INFO",
        **THROUGHPUT_LIMITS,
    )
    env.update(overrides)
    return env


class Child:
    """One child process whose output goes to a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.url = ""
        self.started_at = 0.0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0  # where this start's output begins in a log file shared by restarts
        self.profiled = False

    @property
    def pid(self) -> int:
        """The process id."""
        assert self._process is not None, f"{self.name} is not started"
        return self._process.pid

    async def start(self) -> str:
        """Start the process and return its base URL once it logs that it listens."""
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self.started_at = time.perf_counter()
            self._process = subprocess.Popen(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.perf_counter() + START_TIMEOUT_S
        while True:
            match = _LISTENING.search(self._log_text())
            if match:
                self.url = f"http://127.0.0.1:{match.group(1)}"
                self._start_profiler()
                return self.url
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self._process.returncode} before listening; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if time.perf_counter() > deadline:
                raise TimeoutError(
                    f"{self.name} did not listen within {START_TIMEOUT_S} s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            await asyncio.sleep(_LOG_POLL_S)

    def _start_profiler(self) -> None:
        """Attach py-spy when BENCH_PROFILE_DIR is set (--profile). It exits with the child."""
        folder = os.environ.get(PROFILE_DIR_VARIABLE)
        if not folder or not self.profiled:
            return
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        output = path / f"{self.log_path.parent.name}-{self.name}-{self.pid}.txt"
        argv = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(self.pid),
                "--format", "raw", "--rate", "250", "--nonblocking",
                "--output", str(output)]  # fmt: skip
        with self.log_path.with_suffix(".py-spy.log").open("ab") as log:
            subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def rss_mb(self) -> float:
        """Return the resident set size (VmRSS of /proc/PID/status) in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS line in /proc/{self.pid}/status")

    def cpu_s(self) -> float:
        """Return the CPU time (user + system) the process has used, in seconds."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        # After the command name: fields[11] is utime and fields[12] is stime, in clock ticks.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """Send SIGTERM, wait up to ``timeout``, then SIGKILL; return the exit code."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            deadline = time.perf_counter() + timeout
            while process.poll() is None and time.perf_counter() < deadline:
                await asyncio.sleep(0.02)
            if process.poll() is None:
                process.kill()
                process.wait()
        return process.returncode

    def log_tail(self, lines: int = 20) -> str:
        """Return the last lines of the log."""
        return "\n".join(self._log_text().splitlines()[-lines:])

    def log_count(self, fragment: str) -> int:
        """Return how many log lines contain ``fragment``."""
        return sum(fragment in line for line in self._log_text().splitlines())

    def _log_text(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


def serve_child(api_url: str, work: Path, name: str = "serve", **overrides: str) -> Child:
    """Return (not yet started) ``relay-plugin serve`` with its data folder under ``work``."""
    env = serve_env(api_url, work / "data", **overrides)
    argv = [sys.executable, "-m", "relay_plugin", "serve"]
    child = Child(name, argv, env, work / f"{name}.log")
    child.profiled = True
    return child


def agent_child(mode: str, work: Path) -> Child:
    """Return (not yet started) the reference agent in ``mode`` (echo, delay:S, ...)."""
    argv = [sys.executable, str(BENCH_DIR / "agent_server.py"), "--mode", mode]
    safe_mode = mode.replace(":", "-")
    return Child(f"agent {mode}", argv, clean_env(), work / f"agent-{safe_mode}.log")


def naive_child(api_url: str, agent_url: str, work: Path) -> Child:
    """Return (not yet started) the naive baseline app."""
    env = clean_env()
    env.update(
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=api_url,
        AGENT_URL=agent_url,
        HOST="127.0.0.1",
        PORT="0",
    )
    argv = [sys.executable, str(BENCH_DIR / "baseline" / "naive_app.py")]
    child = Child("naive", argv, env, work / "naive.log")
    child.profiled = True
    return child


def channel_id(index: int) -> str:
    """Return the id of bench channel ``index``: C0000000, C0000001, ..."""
    return f"C{index:07d}"


def populate(data_dir: Path, agent_url: str, count: int, *, bots_per_channel: int = 1) -> float:
    """Store ``count`` bindings of the bench bot in channels 0, 1, ...; return the seconds taken.

    The bench bot is bound in each channel; with ``bots_per_channel`` > 1 further bots
    (``other1``, ...) fill the channel, as in a workspace where a channel has several bots.
    """
    started = time.perf_counter()
    bindings = []
    for index in range(count):
        channel, slot = divmod(index, bots_per_channel)
        bot = BOT_NAME if slot == 0 else f"other{slot}"
        binding = BotBinding("T0001", channel_id(channel), bot, agent_url, created_by=ADMIN_USER)
        bindings.append(binding)
    with BindingStore(data_dir) as store:
        store.put_many(bindings)
    return time.perf_counter() - started


async def wait_healthy(url: str, timeout: float = START_TIMEOUT_S) -> float:
    """Poll ``GET /healthz`` until it returns 200; return the perf_counter time it did."""
    deadline = time.perf_counter() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return time.perf_counter()
            except aiohttp.ClientError:
                pass
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{url}/healthz did not return 200 within {timeout} s")
            await asyncio.sleep(_LOG_POLL_S)


async def agent_timings(agent_url: str) -> dict[str, tuple[float, float]]:
    """Fetch (and reset) the agent's arrival and response times per relayed text."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{agent_url}/bench/timings") as response:
            response.raise_for_status()
            data = await response.json()
    return {text: (float(pair[0]), float(pair[1])) for text, pair in data.items()}
