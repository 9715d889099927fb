"""``relay-plugin check`` against the Slack simulator and the reference agent on 127.0.0.1."""

import asyncio
import os
import socket
import sys
from pathlib import Path

from relay_plugin.check import REQUIRED_SCOPES, health_url
from relay_plugin.core.store import BindingStore, BotBinding
from relay_plugin.tools.agent import start_agent
from relay_plugin.tools.simulator import SlackSimulator

BOT_TOKEN = "xoxb-test"


def check_env(sim: SlackSimulator, data_dir: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "RELAY_"))}
    env.update(
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET="check-secret",
        SLACK_API_URL=sim.api_url,
        RELAY_DATA_DIR=str(data_dir),
        RELAY_ALLOWED_HOSTS="127.0.0.1,::1",
        RELAY_CONNECT_TIMEOUT_S="2",
        RELAY_ANSWER_TIMEOUT_S="5",
    )
    env.update(overrides)
    return env


async def run_check(env: dict[str, str]) -> tuple[int, list[str]]:
    """Run the real command; the simulator and agent keep serving in this event loop meanwhile."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay_plugin", "check", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert b"Traceback" not in stderr, stderr.decode()
    return process.returncode, stdout.decode().splitlines()


def bind(data_dir: Path, bot: str, url: str, channel: str = "C0001") -> None:
    with BindingStore(data_dir) as store:
        store.put(BotBinding(team_id="T0001", channel_id=channel, bot=bot, url=url))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lines_with(lines: list[str], fragment: str) -> list[str]:
    return [line for line in lines if fragment in line]


def test_health_url_uses_origin():
    assert health_url("HTTPS://Bots.Example.com:443/") == "https://bots.example.com/healthz"
    assert health_url("http://bots.example:9080/v1/relay?x=1") == "http://bots.example:9080/healthz"


async def test_healthy(tmp_path):
    runner, agent_url = await start_agent()
    try:
        async with SlackSimulator(bot_token=BOT_TOKEN) as sim:
            bind(tmp_path, "echo", agent_url)
            bind(tmp_path, "echo2", f"{agent_url}/relay", channel="C0002")
            code, lines = await run_check(check_env(sim, tmp_path))
    finally:
        await runner.cleanup()
    assert code == 0, lines
    assert lines[-1] == "check passed: no problems found."
    assert lines_with(lines, "ok       Slack: auth.test passed as relay (U0RELAY)")
    assert lines_with(lines, "ok       store:")
    assert lines_with(lines, "2 binding(s) in 2 channel(s)")
    endpoint = lines_with(lines, f"endpoint {agent_url}/healthz")
    assert len(endpoint) == 1
    assert endpoint[0].startswith("ok ")
    assert "echo in C0001, echo2 in C0002" in endpoint[0]
    assert "answered HTTP 200" in endpoint[0]
    assert not lines_with(lines, "PROBLEM")


async def test_bad_token(tmp_path):
    async with SlackSimulator(bot_token=BOT_TOKEN) as sim:
        code, lines = await run_check(check_env(sim, tmp_path, SLACK_BOT_TOKEN="xoxb-wrong"))
    problem = lines_with(lines, "PROBLEM  Slack:")
    assert code == 1
    assert len(problem) == 1
    assert "auth.test failed with invalid_auth" in problem[0]
    assert "Fix: copy the Bot User OAuth Token" in problem[0]
    assert "xoxb-wrong" not in "\n".join(lines)
    assert lines[-1] == "check failed: 1 problem found."


async def test_endpoint_down(tmp_path):
    down = f"http://127.0.0.1:{closed_port()}"
    async with SlackSimulator(bot_token=BOT_TOKEN) as sim:
        bind(tmp_path, "down", down)
        code, lines = await run_check(check_env(sim, tmp_path))
    problem = lines_with(lines, f"PROBLEM  endpoint {down}/healthz (down in C0001)")
    assert code == 1
    assert len(problem) == 1
    assert "cannot connect" in problem[0]
    assert "Fix: start the bot instance" in problem[0]


async def test_no_healthz_is_note(tmp_path):
    async with SlackSimulator(bot_token=BOT_TOKEN) as sim:
        # The simulator has no /healthz route, so it returns 404 there.
        bind(tmp_path, "plain", sim.base_url)
        code, lines = await run_check(check_env(sim, tmp_path))
    note = lines_with(lines, f"note     endpoint {sim.base_url}/healthz")
    assert code == 0, lines
    assert len(note) == 1
    assert "no /healthz (HTTP 404)" in note[0]


async def test_blocked_endpoint(tmp_path):
    runner, agent_url = await start_agent()
    try:
        async with SlackSimulator(bot_token=BOT_TOKEN) as sim:
            bind(tmp_path, "echo", agent_url)
            code, lines = await run_check(check_env(sim, tmp_path, RELAY_ALLOWED_HOSTS=""))
    finally:
        await runner.cleanup()
    problem = lines_with(lines, "PROBLEM  endpoint")
    assert code == 1
    assert len(problem) == 1
    assert "blocked: 127.0.0.1 is a loopback address" in problem[0]
    assert "RELAY_ALLOWED_HOSTS" in problem[0]


async def test_missing_scopes(tmp_path):
    async with SlackSimulator(bot_token=BOT_TOKEN) as sim:
        sim.scopes = [s for s in REQUIRED_SCOPES if s not in ("channels:read", "groups:read")]
        code, lines = await run_check(check_env(sim, tmp_path))
    problems = lines_with(lines, "PROBLEM  Slack scope")
    assert code == 1
    assert len(problems) == 2
    assert "channels:read: the bot token lacks it, so the Home tab" in problems[0]
    assert "groups:read" in problems[1]


async def test_all_scopes_granted(tmp_path):
    async with SlackSimulator(bot_token=BOT_TOKEN) as sim:
        sim.scopes = [*REQUIRED_SCOPES, "im:history"]
        code, lines = await run_check(check_env(sim, tmp_path))
    assert code == 0, lines
    assert not lines_with(lines, "Slack scope")


async def test_missing_store_is_note(tmp_path):
    data = tmp_path / "never-created"
    async with SlackSimulator(bot_token=BOT_TOKEN) as sim:
        code, lines = await run_check(check_env(sim, data))
    assert code == 0, lines
    assert lines_with(lines, f"note     store: {data / 'relay.db'} does not exist yet")
    assert not data.exists()


async def test_corrupt_store(tmp_path):
    (tmp_path / "relay.db").write_bytes(b"this is not a database" * 100)
    async with SlackSimulator(bot_token=BOT_TOKEN) as sim:
        code, lines = await run_check(check_env(sim, tmp_path))
    problem = lines_with(lines, "PROBLEM  store:")
    assert code == 1
    assert len(problem) == 1
    assert str(tmp_path / "relay.db") in problem[0]


async def test_invalid_settings(tmp_path):
    async with SlackSimulator(bot_token=BOT_TOKEN) as sim:
        env = check_env(sim, tmp_path)
        del env["SLACK_BOT_TOKEN"]
        code, lines = await run_check(env)
    assert code == 1
    assert lines[0].startswith("PROBLEM  configuration: SLACK_BOT_TOKEN: missing")
    assert not lines_with(lines, "auth.test")
    assert sim.calls == []


def test_scopes_match_manifest():
    manifest = (Path(__file__).parent.parent / "manifest.yml").read_text()
    bot_scopes = manifest.split("    bot:\n", 1)[1].split("settings:", 1)[0]
    listed = [line.split("#")[0].strip().removeprefix("- ") for line in bot_scopes.splitlines()]
    assert sorted(scope for scope in listed if scope) == sorted(REQUIRED_SCOPES)
