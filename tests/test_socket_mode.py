"""Socket Mode: the simulator's websocket side, and the real app process connected through it."""

from __future__ import annotations

import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from harness import APP_TOKEN, BOT_TOKEN, app_env, running_stack, serve_until_exit
from relay_plugin.config import Settings
from relay_plugin.errors import ConfigError
from relay_plugin.tools.simulator import SlackSimulator

BASE = {"SLACK_BOT_TOKEN": "xoxb-1", "RELAY_DATA_DIR": "/tmp/x"}
ROOT = Path(__file__).resolve().parent.parent


# Settings


def test_app_token_turns_on_socket_mode():
    settings = Settings.from_env({**BASE, "SLACK_APP_TOKEN": "xapp-1-A1-1-abc"})
    assert settings.socket_mode
    assert settings.slack_signing_secret == ""
    assert "xapp-1-A1-1-abc" not in repr(settings)


def test_no_app_token_means_http():
    settings = Settings.from_env({**BASE, "SLACK_SIGNING_SECRET": "s"})
    assert not settings.socket_mode


def test_app_token_prefix_checked():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, "SLACK_APP_TOKEN": "xoxb-not-an-app-token"})
    assert caught.value.name == "SLACK_APP_TOKEN"
    assert "'xapp-'" in str(caught.value)


def test_http_mode_still_needs_signing_secret():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(BASE)
    assert caught.value.name == "SLACK_SIGNING_SECRET"
    assert "SLACK_APP_TOKEN" in str(caught.value)


def manifest_body(name: str) -> list[str]:
    """Return the YAML lines of a manifest without comments, which may differ between the two."""
    lines = (ROOT / name).read_text().splitlines()
    return [re.sub(r"\s+#.*$", "", line) for line in lines if not line.startswith("#")]


def test_socket_manifest_matches_http_manifest():
    http = manifest_body("manifest.yml")
    request_urls = [line for line in http if "https://relay.example.com/" in line]
    expected = [
        line.replace("socket_mode_enabled: false", "socket_mode_enabled: true")
        for line in http
        if line not in request_urls
    ]
    socket = manifest_body("manifest.socket-mode.yml")
    assert request_urls
    assert all(line.strip().startswith(("url:", "request_url:")) for line in request_urls)
    assert socket == expected


# The simulator's Socket Mode side, driven by a plain websocket client


@pytest.fixture
async def sim() -> AsyncIterator[SlackSimulator]:
    async with SlackSimulator(bot_token=BOT_TOKEN, app_token=APP_TOKEN) as simulator:
        yield simulator


async def open_connection(sim: SlackSimulator, token: str) -> dict:
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with session.post(sim.api_url + "apps.connections.open", headers=headers) as response:
            return await response.json()


@pytest.mark.parametrize(
    ("token", "error"),
    [("", "not_authed"), ("xapp-wrong", "invalid_auth"), (BOT_TOKEN, "not_allowed_token_type")],
    ids=["none", "wrong", "bot-token"],
)
async def test_connections_open_rejects_token(sim, token, error):
    body = await open_connection(sim, token)
    assert body == {"ok": False, "error": error}
    assert sim.socket_mode.urls_issued == 0


async def test_connections_open_returns_ws_url(sim):
    body = await open_connection(sim, APP_TOKEN)
    host_port = sim.base_url.removeprefix("http://")
    assert body["ok"] is True
    assert body["url"].startswith(f"ws://{host_port}/link/?ticket=")
    assert sim.calls[-1].method == "apps.connections.open"


async def test_link_hello_and_single_use_ticket(sim):
    url = (await open_connection(sim, APP_TOKEN))["url"]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            hello = await ws.receive_json(timeout=5)
            with pytest.raises(aiohttp.WSServerHandshakeError) as reused:
                await session.ws_connect(url)
    assert hello["type"] == "hello"
    assert hello["connection_info"] == {"app_id": sim.app_id}
    assert reused.value.status == 401


async def test_command_ack_payload_shown_as_ephemeral(sim):
    url = (await open_connection(sim, APP_TOKEN))["url"]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            await ws.receive_json(timeout=5)
            fields = {"command": "/relay", "text": "list", "channel_id": "C0001", "user_id": "U0002"}
            envelope = await sim.socket_mode.push_command(fields)
            pushed = await ws.receive_json(timeout=5)
            await ws.send_json({"envelope_id": pushed["envelope_id"], "payload": {"text": "No bots"}})
            await sim.socket_mode.wait_for_ack(envelope)
    ephemerals = sim.ephemerals("C0001", "U0002")
    assert pushed["type"] == "slash_commands"
    assert pushed["accepts_response_payload"] is True
    assert pushed["payload"] == fields
    assert [m.text for m in ephemerals] == ["No bots"]
    assert sim.socket_mode.problems == []


async def test_bad_acks_recorded_as_problems(sim):
    url = (await open_connection(sim, APP_TOKEN))["url"]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            await ws.receive_json(timeout=5)
            envelope = await sim.socket_mode.push_event({"type": "event_callback", "event": {}})
            pushed = await ws.receive_json(timeout=5)
            await ws.send_str("not json")
            await ws.send_json({"envelope_id": "no-such-envelope"})
            await ws.send_json({"envelope_id": pushed["envelope_id"], "payload": {"text": "x"}})
            await ws.send_json({"envelope_id": pushed["envelope_id"]})
            await sim.wait_for(lambda: len(sim.socket_mode.problems) == 4, description="4 problems")
    problems = sim.socket_mode.problems
    assert pushed["type"] == "events_api"
    assert pushed["retry_attempt"] == 0
    assert envelope.acked
    assert "not an ack" in problems[0]
    assert "unknown envelope 'no-such-envelope'" in problems[1]
    assert "has a payload" in problems[2]
    assert "acknowledged twice" in problems[3]


async def test_unacked_envelope_detected(sim):
    sim.socket_mode.ack_timeout_s = 0.2
    url = (await open_connection(sim, APP_TOKEN))["url"]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            await ws.receive_json(timeout=5)
            envelope = await sim.socket_mode.push_event({"type": "event_callback", "event": {}})
            with pytest.raises(TimeoutError) as caught:
                await sim.socket_mode.wait_for_ack(envelope)
    assert envelope.envelope_id in str(caught.value)
    assert sim.socket_mode.unacked() == [envelope]


async def test_drop_closes_the_websocket(sim):
    url = (await open_connection(sim, APP_TOKEN))["url"]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            await ws.receive_json(timeout=5)
            dropped = await sim.socket_mode.drop()
            closing = await ws.receive(timeout=5)
    assert closing.type == aiohttp.WSMsgType.CLOSE
    assert dropped.ws.closed
    assert sim.socket_mode.current() is None


# The real app process over Socket Mode


def urls_requested(stack) -> int:
    return sum(1 for call in stack.sim.calls if call.method == "apps.connections.open")


async def mention_answered(stack, text: str) -> str:
    event = await stack.mention(f"echo {text}")
    replies = await stack.final_replies("C0001", event["ts"])
    return replies[0].blocks[0]["text"]


async def test_mention_answered_in_thread(tmp_path):
    async with running_stack(
        tmp_path / "data", transport="socket", SLACK_SIGNING_SECRET=""
    ) as stack:
        bound = await stack.command(f"bind echo {stack.agent_url}")
        event = await stack.mention("echo over the socket")
        replies = await stack.final_replies("C0001", event["ts"])
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{stack.app.url}/slack/events", data=b"{}") as events:
                events_status = events.status
            async with session.get(f"{stack.app.url}/healthz") as health:
                health_status = health.status
        socket = stack.sim.socket_mode
    assert bound.startswith("Bound *echo*")
    assert replies[0].thread_ts == event["ts"]
    assert replies[0].blocks[0]["text"] == "echo: over the socket"
    assert [e.type for e in socket.envelopes] == ["slash_commands", "events_api"]
    assert all(e.acked for e in socket.envelopes)
    assert socket.problems == []
    assert events_status == 404
    assert health_status == 200
    assert any("Slack transport: Socket Mode" in line for line in stack.app.logs)
    assert any("Socket Mode connected" in line for line in stack.app.logs)


async def test_reconnects_after_drop(tmp_path):
    async with running_stack(tmp_path / "data", transport="socket") as stack:
        await stack.command(f"bind echo {stack.agent_url}")
        await stack.sim.socket_mode.drop()
        await stack.sim.socket_mode.wait_connected(2)
        answer = await mention_answered(stack, "after the drop")
        connections = stack.sim.socket_mode.connections
    assert urls_requested(stack) == 2
    assert connections[0].ws.closed
    assert answer == "echo: after the drop"
    assert stack.sim.socket_mode.envelopes[-1].connection == 2


async def test_reconnects_on_refresh_requested(tmp_path):
    async with running_stack(tmp_path / "data", transport="socket") as stack:
        await stack.command(f"bind echo {stack.agent_url}")
        await stack.sim.socket_mode.request_refresh()
        await stack.sim.socket_mode.wait_connected(2)
        first = stack.sim.socket_mode.connections[0]
        await stack.sim.wait_for(lambda: first.ws.closed, description="old connection closed")
        answer = await mention_answered(stack, "after the refresh")
    assert urls_requested(stack) == 2
    assert answer == "echo: after the refresh"
    assert stack.sim.socket_mode.envelopes[-1].connection == 2


async def test_unhandled_event_never_acked(tmp_path):
    async with running_stack(tmp_path / "data", transport="socket") as stack:
        stack.sim.socket_mode.ack_timeout_s = 0.5
        event = {"type": "reaction_added", "user": "U0001", "reaction": "eyes",
                 "item": {"type": "message", "channel": "C0001", "ts": "1.000001"}}  # fmt: skip
        status = await stack.slack.send_event(event)
        unacked = stack.sim.socket_mode.unacked()
    assert status == 404
    assert [e.payload["event"]["type"] for e in unacked] == ["reaction_added"]


async def test_sigterm_drains_relay_and_closes_socket(tmp_path):
    async with running_stack(tmp_path / "data", transport="socket", agent_mode="delay:1") as stack:
        await stack.command(f"bind slow {stack.agent_url}")
        event = await stack.mention("slow take your time")
        await stack.sim.wait_for(lambda: stack.agent.received, description="relay sent")
        code = await stack.app.stop(signal.SIGTERM)
        replies = stack.bot_replies("C0001", event["ts"])
        connection = stack.sim.socket_mode.connections[0]
    assert code == 0
    assert replies[0].blocks[0]["text"] == "echo: take your time"
    assert connection.ws.closed
    assert urls_requested(stack) == 1
    assert any("Socket Mode connection closed" in line for line in stack.app.logs)


async def test_rejected_app_token_stops_startup(tmp_path):
    async with SlackSimulator(bot_token=BOT_TOKEN, app_token=APP_TOKEN) as sim:
        env = app_env(sim, tmp_path / "data", SLACK_APP_TOKEN="xapp-revoked")
        returncode, stderr = await serve_until_exit(env)
    assert returncode == 2
    assert b"SLACK_APP_TOKEN: rejected by Slack's apps.connections.open (invalid_auth)" in stderr
    assert b"Traceback" not in stderr
    assert b"xapp-revoked" not in stderr



async def test_connections_open_failure_stops_startup(tmp_path):
    async with SlackSimulator(bot_token=BOT_TOKEN, app_token=APP_TOKEN) as sim:
        sim.fail_next("apps.connections.open", "internal_error")
        env = app_env(sim, tmp_path / "data", SLACK_APP_TOKEN=APP_TOKEN)
        returncode, stderr = await serve_until_exit(env)
    assert returncode == 1
    assert b"Socket Mode: apps.connections.open failed: internal_error" in stderr
    assert b"Traceback" not in stderr
