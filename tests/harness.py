"""End-to-end harness: the real ``relay-plugin serve`` process, the Slack simulator and the agent.

Everything listens on 127.0.0.1 with ports picked by the kernel.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from aiohttp import web

from relay_plugin.tools.agent import AGENT, RelayAgent, start_agent
from relay_plugin.tools.simulator import SlackSimulator
from relay_plugin.tools.slack_client import SignedSlackClient, mention_text
from relay_plugin.tools.socket_client import SocketModeSlackClient

SIGNING_SECRET = "e2e-signing-secret"
BOT_TOKEN = "xoxb-test"
APP_TOKEN = "xapp-1-A0RELAY-1-e2e"
TRANSPORTS = ("http", "socket")
START_TIMEOUT_S = 20.0
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


class AppProcess:
    """One ``python -m relay_plugin serve`` child process and its log lines."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.logs: list[str] = []
        self.url = ""
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._new_line = asyncio.Event()

    async def start(self) -> str:
        """Start the process and return its base URL once it listens."""
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay_plugin", "serve",
            env=self.env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read_logs())
        line = await self.wait_for_log("listening on", timeout=START_TIMEOUT_S)
        match = _LISTENING.search(line)
        assert match, f"no loopback address in {line!r}"
        self.url = f"http://127.0.0.1:{match.group(1)}"
        return self.url

    async def _read_logs(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        async for raw in self._process.stderr:
            self.logs.append(raw.decode(errors="replace").rstrip())
            self._new_line.set()
        self._new_line.set()

    async def wait_for_log(self, fragment: str, timeout: float = 10.0) -> str:
        """Return the first log line containing ``fragment``, waiting up to ``timeout``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for line in self.logs:
                if fragment in line:
                    return line
            if self._process is not None and self._process.returncode is not None:
                raise AssertionError(
                    f"app exited with {self._process.returncode} before logging {fragment!r}:\n"
                    + "\n".join(self.logs[-30:])
                )
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no log line with {fragment!r}:\n" + "\n".join(self.logs[-30:]))
            self._new_line.clear()
            try:
                await asyncio.wait_for(self._new_line.wait(), min(remaining, 0.2))
            except TimeoutError:
                pass

    async def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``signum`` and return the exit code; kills the process if it hangs."""
        process = self._process
        if process is None:
            return 0
        if process.returncode is None:
            process.send_signal(signum)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._reader is not None:
            await self._reader
        return process.returncode if process.returncode is not None else -1


async def serve_until_exit(env: dict[str, str], timeout: float = 20.0) -> tuple[int, bytes]:
    """Run ``relay-plugin serve`` that is expected to stop by itself; return its code and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay_plugin", "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode if process.returncode is not None else -1, stderr


def app_env(sim: SlackSimulator, data_dir: Path, **overrides: str) -> dict[str, str]:
    """Return the environment of an app process wired to the simulator, with short delays."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SLACK_", "RELAY_"))}
    env.update(
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=sim.api_url,
        RELAY_DATA_DIR=str(data_dir),
        HOST="127.0.0.1",
        PORT="0",
        RELAY_INSTANCE_NAME="e2e-relay",
        RELAY_RETRY_BASE_S="0.01",
        RELAY_RETRY_JITTER="0",
        RELAY_CONNECT_TIMEOUT_S="2",
        RELAY_ANSWER_TIMEOUT_S="10",
        RELAY_SHUTDOWN_GRACE_S="10",
        RELAY_LOG_LEVEL="INFO",
        RELAY_ALLOWED_HOSTS="127.0.0.1,::1",
    )
    env.update(overrides)
    return env


@dataclass
class Stack:
    """A running app with its Slack simulator and one reference agent."""

    sim: SlackSimulator
    slack: SignedSlackClient | SocketModeSlackClient
    app: AppProcess
    agent: RelayAgent
    agent_url: str
    data_dir: Path
    transport: str = "http"

    async def command(self, text: str, **kwargs: str) -> str:
        """Run ``/relay text`` and return the text of the ephemeral ack."""
        result = await self.slack.command(text, **kwargs)
        assert result.status == 200, f"/relay {text}: HTTP {result.status} {result.text}"
        return result.json()["text"]

    async def mention(self, rest: str, **kwargs) -> dict:
        """Mention the app with ``rest``; return the delivered event."""
        status, envelope = await self.slack.mention(mention_text(self.sim.bot_user_id, rest), **kwargs)
        assert status == 200
        return envelope["event"]

    async def final_replies(self, channel: str, thread_ts: str, count: int = 1, timeout: float = 10.0):
        """Wait until the thread contains ``count`` bot replies that are not working notes."""

        def done():
            return [m for m in self.bot_replies(channel, thread_ts) if "waiting for the answer" not in m.text]

        await self.sim.wait_for(lambda: len(done()) >= count, timeout, description=f"{count} final replies")
        return done()

    async def click_cancel(self, note, user: str = "U0001", action: dict | None = None):
        """Press the Cancel button of a working note as ``user``; returns the HTTP result.

        ``action`` is the button as it was shown, for a note that may have changed since.
        """
        if action is None:
            action = next(element for block in note.blocks if block.get("type") == "actions"
                          for element in block["elements"])  # fmt: skip
        payload = {
            "type": "block_actions",
            "user": {"id": user, "team_id": self.sim.team_id},
            "team": {"id": self.sim.team_id},
            "api_app_id": "A0RELAY",
            "container": {"type": "message", "message_ts": note.ts, "channel_id": note.channel},
            "channel": {"id": note.channel},
            "message": {"ts": note.ts, "text": note.text},
            "trigger_id": "1.2.3",
            "response_url": self.sim.new_response_url(channel=note.channel, user=user),
            "actions": [{**action, "block_id": "relay_controls", "type": "button",
                         "action_ts": "1700000000.000001"}],
        }  # fmt: skip
        if self.transport == "socket":
            envelope = await self.sim.socket_mode.push_interactive(payload)
            return await self.sim.socket_mode.wait_for_ack(envelope)
        body = urlencode({"payload": json.dumps(payload)}).encode()
        return await self.slack.post(body, "application/x-www-form-urlencoded")

    def working_note(self, channel: str, thread_ts: str):
        """Return the bot's working note in a thread, or None."""
        for message in self.bot_replies(channel, thread_ts):
            if any(block.get("type") == "actions" for block in message.blocks):
                return message
        return None

    def bot_replies(self, channel: str, thread_ts: str):
        """Return the bot's messages in a thread."""
        return [m for m in self.sim.thread(channel, thread_ts) if m.user == self.sim.bot_user_id]


@asynccontextmanager
async def running_stack(
    data_dir: Path,
    *,
    agent_mode: str = "echo",
    agent_token: str = "",
    channels: dict[str, dict] | None = None,
    transport: str = "http",
    **env: str,
) -> AsyncIterator[Stack]:
    """Start simulator, agent and app; stop all three on exit.

    ``transport="socket"`` gives the app an app-level token, so Slack's deliveries reach it over
    the simulator's Socket Mode websocket instead of signed HTTP requests.
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"transport={transport!r}: use one of {', '.join(TRANSPORTS)}")
    sim = SlackSimulator(bot_token=BOT_TOKEN, channels=channels, app_token=APP_TOKEN)
    await sim.start()
    if transport == "socket":
        env = {"SLACK_APP_TOKEN": APP_TOKEN, **env}
    runner: web.AppRunner | None = None
    app = AppProcess(app_env(sim, data_dir, **env))
    try:
        runner, agent_url = await start_agent(mode=agent_mode, token=agent_token)
        url = await app.start()
        slack: SignedSlackClient | SocketModeSlackClient
        if transport == "socket":
            await sim.socket_mode.wait_connected(timeout=START_TIMEOUT_S)
            slack = SocketModeSlackClient(sim)
        else:
            slack = SignedSlackClient(f"{url}/slack/events", SIGNING_SECRET, sim)
        yield Stack(sim, slack, app, runner.app[AGENT], agent_url, data_dir, transport)
    finally:
        await app.stop()
        if runner is not None:
            await runner.cleanup()
        await sim.stop()
