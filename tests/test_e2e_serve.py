"""The serve process: failures in threads, breakers, restarts, shutdown and configuration."""

import signal
import socket

from harness import AppProcess, app_env, running_stack, serve_until_exit
from relay_plugin.tools.simulator import SlackSimulator


def closed_port() -> int:
    """Return a loopback port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_agent_down_fails_then_circuit_opens(tmp_path):
    async with running_stack(tmp_path / "data", RELAY_BREAKER_OPEN_S="60") as stack:
        await stack.command(f"bind down http://127.0.0.1:{closed_port()}")
        lines = []
        for attempt in range(6):
            event = await stack.mention(f"down try {attempt}")
            replies = await stack.final_replies("C0001", event["ts"])
            lines.append(replies[0].text)
        status = await stack.command("status")
    assert all("could not be reached" in line for line in lines[:5])
    assert "4 attempts" in lines[0]
    assert "is paused after repeated failures" in lines[5]
    assert "next try is allowed in" in lines[5]
    assert "breaker open, half-opens in" in status


async def test_remote_task_failure_shown(tmp_path):
    async with running_stack(tmp_path / "data", agent_mode="fail") as stack:
        await stack.command(f"bind broken {stack.agent_url}")
        event = await stack.mention("broken please")
        replies = await stack.final_replies("C0001", event["ts"])
    assert "*broken* answered with an error" in replies[0].text
    assert "HTTP 500" in replies[0].text
    assert "It said: `agent 'echo' runs in mode 'fail' and fails every task`" in replies[0].text


async def test_fail_first_recovers_with_retries(tmp_path):
    async with running_stack(tmp_path / "data", agent_mode="fail-first:2") as stack:
        await stack.command(f"bind flaky {stack.agent_url}")
        event = await stack.mention("flaky hello")
        replies = await stack.final_replies("C0001", event["ts"])
    assert replies[0].blocks[0]["text"] == "echo: hello"
    assert stack.agent.requests == 3


async def test_bindings_and_events_survive_restart(tmp_path):
    data = tmp_path / "data"
    async with running_stack(data) as first:
        await first.command(f"bind echo {first.agent_url}")
        status, envelope = await first.slack.mention(f"<@{first.sim.bot_user_id}> echo before")
        await first.final_replies("C0001", envelope["event"]["ts"])
    async with running_stack(data) as second:
        listed = await second.command("list")
        retry_status, _ = await second.slack.mention(
            envelope["event"]["text"], event_id=envelope["event_id"], retry_num=2
        )
        await second.app.wait_for_log("ignored a repeated event")
    assert "• *echo* → http://127.0.0.1:" in listed
    assert retry_status == 200
    assert second.agent.received == []


async def test_sigterm_lets_relay_in_flight_finish(tmp_path):
    async with running_stack(tmp_path / "data", agent_mode="delay:1") as stack:
        await stack.command(f"bind slow {stack.agent_url}")
        event = await stack.mention("slow take your time")
        await stack.sim.wait_for(lambda: stack.agent.received, description="relay sent")
        code = await stack.app.stop(signal.SIGTERM)
        replies = stack.bot_replies("C0001", event["ts"])
    assert code == 0
    assert replies[0].blocks[0]["text"] == "echo: take your time"
    assert any("waiting for relays in flight" in line for line in stack.app.logs)


async def test_sigterm_cancels_after_grace_with_failure_line(tmp_path):
    async with running_stack(
        tmp_path / "data", agent_mode="delay:30", RELAY_SHUTDOWN_GRACE_S="0.2"
    ) as stack:
        await stack.command(f"bind slow {stack.agent_url}")
        event = await stack.mention("slow forever")
        await stack.sim.wait_for(lambda: stack.agent.received, description="relay sent")
        code = await stack.app.stop(signal.SIGTERM)
        replies = stack.bot_replies("C0001", event["ts"])
    assert code == 0
    assert "shutting down" in replies[0].text
    assert any("interrupted by shutdown" in line and "task=" in line for line in stack.app.logs)


async def test_missing_setting_stops_startup(tmp_path):
    async with SlackSimulator() as sim:
        env = app_env(sim, tmp_path / "data")
        del env["SLACK_SIGNING_SECRET"]
        returncode, stderr = await serve_until_exit(env)
    assert returncode == 2
    assert b"SLACK_SIGNING_SECRET: missing" in stderr


async def test_corrupt_store_stops_startup(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "relay.db").write_bytes(b"this is not a database" * 100)
    async with SlackSimulator() as sim:
        app = AppProcess(app_env(sim, data))
        returncode, stderr = await serve_until_exit(app.env)
    assert returncode == 1
    assert str(data / "relay.db").encode() in stderr
    assert (data / "relay.db").read_bytes() == b"this is not a database" * 100


async def test_healthz(tmp_path):
    import aiohttp

    async with running_stack(tmp_path / "data") as stack:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{stack.app.url}/healthz") as response:
                body = await response.json()
    assert response.status == 200
    assert body == {"ok": True}


async def test_rejected_bot_token_stops_startup(tmp_path):
    async with SlackSimulator(bot_token="xoxb-right") as sim:
        env = app_env(sim, tmp_path / "data", SLACK_BOT_TOKEN="xoxb-wrong")
        returncode, stderr = await serve_until_exit(env)
    assert returncode == 2
    assert b"SLACK_BOT_TOKEN: Slack rejected it (invalid_auth)" in stderr
    assert b"Traceback" not in stderr
