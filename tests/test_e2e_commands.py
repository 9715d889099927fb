"""/relay end to end: commands into the real app process, as signed HTTP or over Socket Mode."""

import pytest

from harness import TRANSPORTS, running_stack


@pytest.fixture(params=TRANSPORTS)
async def stack(request, tmp_path):
    async with running_stack(tmp_path / "data", transport=request.param) as running:
        yield running


@pytest.fixture
async def http_stack(tmp_path):
    async with running_stack(tmp_path / "data", transport="http") as running:
        yield running


async def test_bind_list_unbind_round_trip(stack):
    bound = await stack.command(f"bind echo {stack.agent_url}")
    listed = await stack.command("list")
    unbound = await stack.command("unbind echo")
    after = await stack.command("list")
    assert f"Bound *echo* in this channel to {stack.agent_url}" in bound
    assert f"• *echo* → {stack.agent_url}" in listed
    assert unbound == "Unbound *echo* from this channel."
    assert after.startswith("No bots are bound in this channel.")


async def test_bind_unwraps_slack_link(stack):
    reply = await stack.command(f"bind echo <{stack.agent_url}/relay|{stack.agent_url[7:]}/relay>")
    assert f"to {stack.agent_url}/relay" in reply


async def test_bindings_are_per_channel(stack):
    await stack.command(f"bind echo {stack.agent_url}", channel="C0001")
    other = await stack.command("list", channel="C0002")
    assert other.startswith("No bots are bound")


async def test_bind_rejects_bad_url(stack):
    reply = await stack.command("bind echo ftp://files.example")
    listed = await stack.command("list")
    assert "invalid URL 'ftp://files.example'" in reply
    assert "http or https" in reply
    assert listed.startswith("No bots are bound")


async def test_unknown_action_shows_usage_hint(stack):
    reply = await stack.command("frobnicate")
    assert "Unknown action `frobnicate`" in reply
    assert "/relay help" in reply


async def test_help_lists_actions(stack):
    reply = await stack.command("help")
    for action in ("bind", "unbind", "list", "status", "test"):
        assert f"/relay {action}" in reply


async def test_unbind_unknown_bot(stack):
    await stack.command(f"bind echo {stack.agent_url}")
    reply = await stack.command("unbind ghost")
    assert reply == "No bot named *ghost* is bound in this channel (bound here: *echo*)."


async def test_test_command_reports_round_trip(stack):
    await stack.command(f"bind echo {stack.agent_url}")
    ack = await stack.command("test echo")
    await stack.sim.wait_for(lambda: len(stack.sim.responses) >= 1, description="test result")
    result = stack.sim.responses[-1]["text"]
    assert ack == "Testing *echo*…"
    assert ":white_check_mark: *echo* answered in" in result
    assert "echo: ping" in result


async def test_test_command_reports_failure(stack):
    await stack.command("bind down http://127.0.0.1:9/")
    await stack.command("test down")
    await stack.sim.wait_for(lambda: len(stack.sim.responses) >= 1, description="test result")
    assert "Test of *down* failed" in stack.sim.responses[-1]["text"]
    assert "could not be reached" in stack.sim.responses[-1]["text"]


async def test_status_shows_breaker_and_latency(stack):
    await stack.command(f"bind echo {stack.agent_url}")
    before = await stack.command("status")
    await stack.command("test echo")
    await stack.sim.wait_for(lambda: len(stack.sim.responses) >= 1, description="test result")
    after = await stack.command("status")
    assert f"*echo* {stack.agent_url}/relay" in before
    assert "breaker closed" in before
    assert "last success never" in before
    assert "last success <!date^" in after


async def test_bad_signature_rejected(http_stack):
    result = await http_stack.slack.post(
        b"command=%2Frelay&text=list", "application/x-www-form-urlencoded", signature="v0=" + "0" * 64
    )
    assert result.status == 401


@pytest.mark.parametrize(
    "body", [b"garbage", b"[1]", b'"text"', b"\xff\xfe", b"{}"], ids=["text", "list", "string", "bytes", "empty-object"]
)
async def test_signed_malformed_body_gets_client_error(http_stack, body):
    result = await http_stack.slack.post(body, "application/json")
    assert result.status in (400, 404)
    assert not any("Traceback" in line for line in http_stack.app.logs)


async def test_non_numeric_timestamp_rejected(http_stack):
    result = await http_stack.slack.post(b"command=%2Frelay", "application/x-www-form-urlencoded",
                                         timestamp="soon")  # fmt: skip
    assert result.status == 401
