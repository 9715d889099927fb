"""Guards and faults over real HTTP: bind policy, fair use, input limits, bad remotes, Slack faults."""

import asyncio
import signal
import sys

import pytest

from fake_remotes import bad_remote, silent_remote
from harness import running_stack


async def test_member_cannot_bind_under_admin_policy(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        refused = await stack.command(f"bind echo {stack.agent_url}", user="U0002")
        listed = await stack.command("list", user="U0002")
    assert refused.startswith(":lock: Only workspace admins and owners may bind")
    assert "RELAY_BIND_POLICY=everyone" in refused
    assert listed.startswith("No bots are bound")


async def test_admin_binds_and_member_uses(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        await stack.command(f"bind echo {stack.agent_url}", user="U0001")
        unbind = await stack.command("unbind echo", user="U0002")
        await stack.command("test echo", user="U0002")
        await stack.sim.wait_for(lambda: stack.sim.responses, description="test result")
    assert unbind.startswith(":lock:")
    assert "answered in" in stack.sim.responses[-1]["text"]


async def test_listed_admin_user_may_bind(tmp_path):
    async with running_stack(tmp_path / "data", RELAY_ADMIN_USERS="U0002") as stack:
        reply = await stack.command(f"bind echo {stack.agent_url}", user="U0002")
    assert reply.startswith("Bound *echo*")


async def test_everyone_policy_skips_role_lookup(tmp_path):
    async with running_stack(tmp_path / "data", RELAY_BIND_POLICY="everyone") as stack:
        reply = await stack.command(f"bind echo {stack.agent_url}", user="U0002")
        lookups = [call for call in stack.sim.calls if call.method == "users.info"]
    assert reply.startswith("Bound *echo*")
    assert lookups == []


async def test_role_lookup_cached(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        for name in ("a", "b", "c"):
            await stack.command(f"bind {name} {stack.agent_url}")
        lookups = [call for call in stack.sim.calls if call.method == "users.info"]
    assert len(lookups) == 1


async def test_bind_token_never_shown(tmp_path):
    async with running_stack(tmp_path / "data", agent_token="s3cret-token") as stack:
        bound = await stack.command(f"bind echo {stack.agent_url} token=s3cret-token")
        listed = await stack.command("list")
        event = await stack.mention("echo authorized?")
        replies = await stack.final_replies("C0001", event["ts"])
        logs = "\n".join(stack.app.logs)
    assert "s3cret-token" not in bound
    assert "with its own token" in bound
    assert "token set" in listed
    assert "s3cret-token" not in listed
    assert replies[0].blocks[0]["text"] == "echo: authorized?"
    assert "s3cret-token" not in logs


async def test_bind_hints_invite_when_not_member(tmp_path):
    channels = {"C0002": {"is_member": False}}
    async with running_stack(tmp_path / "data", channels=channels) as stack:
        reply = await stack.command(f"bind echo {stack.agent_url}", channel="C0002")
    assert "Invite me with `/invite @relay`" in reply


async def test_user_in_flight_limit_replies(tmp_path):
    async with running_stack(
        tmp_path / "data", agent_mode="delay:1", RELAY_USER_IN_FLIGHT="1"
    ) as stack:
        await stack.command(f"bind slow {stack.agent_url}")
        first = await stack.mention("slow one")
        await stack.sim.wait_for(lambda: stack.agent.received, description="first relay sent")
        second = await stack.mention("slow two")
        refused = await stack.final_replies("C0001", second["ts"])
        answered = await stack.final_replies("C0001", first["ts"])
    assert "Not relayed to *slow*" in refused[0].text
    assert "limit: user relays in flight" in refused[0].text
    assert answered[0].blocks[0]["text"] == "echo: one"


async def test_thread_budget_stops_loop(tmp_path):
    async with running_stack(tmp_path / "data", RELAY_THREAD_BUDGET="2") as stack:
        await stack.command(f"bind echo {stack.agent_url}")
        root = await stack.mention("echo 1")
        await stack.final_replies("C0001", root["ts"])
        await stack.mention("echo 2", thread_ts=root["ts"])
        await stack.final_replies("C0001", root["ts"], count=2)
        await stack.mention("echo 3", thread_ts=root["ts"])
        replies = await stack.final_replies("C0001", root["ts"], count=3)
    assert "limit: relays per thread" in replies[2].text
    assert "Start a new thread" in replies[2].text
    assert len(stack.agent.received) == 2


async def test_oversized_mention_rejected(tmp_path):
    async with running_stack(tmp_path / "data", RELAY_MAX_CONTENT_BYTES="100") as stack:
        await stack.command(f"bind echo {stack.agent_url}")
        event = await stack.mention("echo " + "é" * 60)
        replies = await stack.final_replies("C0001", event["ts"])
    assert "the message is 120 bytes and the maximum is 100 bytes" in replies[0].text
    assert stack.agent.received == []


@pytest.mark.parametrize(
    ("path", "shown"),
    [("/html", "HTML page"), ("/garbage", "not valid UTF-8"), ("/empty", "empty"),
     ("/wrong-types", "must be a string")],
)  # fmt: skip
async def test_bad_answer_gives_failure_line(tmp_path, path, shown):
    async with bad_remote() as base, running_stack(tmp_path / "data") as stack:
        await stack.command(f"bind bad {base}{path}")
        event = await stack.mention("bad hello")
        replies = await stack.final_replies("C0001", event["ts"])
    assert "sent an answer that is not a relay response" in replies[0].text
    assert shown in replies[0].text


async def test_huge_answer_truncated_with_note(tmp_path):
    async with bad_remote() as base, running_stack(
        tmp_path / "data", RELAY_MAX_ANSWER_CHARS="20000"
    ) as stack:
        await stack.command(f"bind big {base}/big")
        event = await stack.mention("big talk")
        replies = await stack.final_replies("C0001", event["ts"], count=2)
    shown = "".join(reply.blocks[0]["text"] for reply in replies)
    assert len(replies) == 2
    assert shown.count("x") == 20_000
    assert "answer truncated: the first 20,000 of 2,097,152 characters" in shown


async def test_silent_agent_times_out(tmp_path):
    async with silent_remote() as base, running_stack(
        tmp_path / "data", RELAY_ANSWER_TIMEOUT_S="0.5"
    ) as stack:
        await stack.command(f"bind mute {base}")
        event = await stack.mention("mute anyone there?")
        replies = await stack.final_replies("C0001", event["ts"])
    assert "did not answer in time" in replies[0].text
    assert "attempts" not in replies[0].text


async def test_agent_killed_mid_request(tmp_path):
    from test_e2e_serve import closed_port

    port = closed_port()
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay_plugin", "agent", "--port", str(port), "--mode", "delay:30",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await agent.stderr.readline()  # its "listening" line
        async with running_stack(tmp_path / "data") as stack:
            await stack.command(f"bind doomed http://127.0.0.1:{port}")
            event = await stack.mention("doomed work")
            await stack.sim.wait_for(lambda: stack.bot_replies("C0001", event["ts"]),
                                     description="working note")  # fmt: skip
            await asyncio.sleep(0.5)
            agent.send_signal(signal.SIGKILL)
            replies = await stack.final_replies("C0001", event["ts"])
    finally:
        if agent.returncode is None:
            agent.kill()
        await agent.wait()
    assert "*doomed*" in replies[0].text
    assert "could not be reached" in replies[0].text or "disconnect" in replies[0].text


async def test_slack_429_on_update_then_answer_lands(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        await stack.command(f"bind echo {stack.agent_url}")
        stack.sim.fail_next("chat.update", status=429, retry_after=1)
        event = await stack.mention("echo patient")
        replies = await stack.final_replies("C0001", event["ts"])
        updates = [call for call in stack.sim.calls if call.method == "chat.update"]
    assert replies[0].blocks[0]["text"] == "echo: patient"
    assert len(updates) == 2


async def test_slack_500_on_update_retried(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        await stack.command(f"bind echo {stack.agent_url}")
        stack.sim.fail_next("chat.update", status=500)
        event = await stack.mention("echo again")
        replies = await stack.final_replies("C0001", event["ts"])
    assert replies[0].blocks[0]["text"] == "echo: again"


async def test_lost_answer_logged_in_full(tmp_path):
    async with running_stack(tmp_path / "data", agent_mode="delay:0.5") as stack:
        await stack.command(f"bind echo {stack.agent_url}")
        event = await stack.mention("echo remember me")
        await stack.sim.wait_for(lambda: stack.agent.received, description="relay sent")
        stack.sim.fail_next("chat.update", "channel_not_found", times=5)
        stack.sim.fail_next("chat.postMessage", "channel_not_found", times=5)
        line = await stack.app.wait_for_log("answer not posted")
    assert "answer='echo: remember me'" in line
    assert "task=" in line
    assert event["ts"]


async def test_revoked_token_logged_once(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        await stack.command(f"bind echo {stack.agent_url}")
        stack.sim.fail_next("chat.postMessage", "token_revoked", times=3)
        for word in ("one", "two", "three"):
            await stack.mention(f"echo {word}")
        await stack.app.wait_for_log("Slack rejected the bot token")
        marker = await stack.mention("echo marker")
        await stack.final_replies("C0001", marker["ts"])
        errors = [line for line in stack.app.logs if "rejected the bot token" in line]
    assert len(errors) == 1
    assert "token_revoked" in errors[0]


async def test_debug_logs_carry_no_secrets(tmp_path):
    async with running_stack(
        tmp_path / "data", agent_token="relay-secret-1", RELAY_TOKEN="relay-secret-1",
        RELAY_LOG_LEVEL="DEBUG",
    ) as stack:  # fmt: skip
        await stack.command(f"bind echo {stack.agent_url}")
        event = await stack.mention("echo log me")
        replies = await stack.final_replies("C0001", event["ts"])
        logs = "\n".join(stack.app.logs)
    assert replies[0].blocks[0]["text"] == "echo: log me"
    assert "relay-secret-1" not in logs
    assert "xoxb-test" not in logs
    assert "e2e-signing-secret" not in logs


async def test_rebind_same_endpoint_keeps_token(tmp_path):
    async with running_stack(tmp_path / "data", agent_token="t0k3n") as stack:
        await stack.command(f"bind echo {stack.agent_url} token=t0k3n dedupe=yes")
        again = await stack.command(f"bind echo {stack.agent_url}/relay")
        listed = await stack.command("list")
        event = await stack.mention("echo still allowed")
        replies = await stack.final_replies("C0001", event["ts"])
    assert "It keeps its token" in again
    assert "token set, dedupe" in listed
    assert replies[0].blocks[0]["text"] == "echo: still allowed"


async def test_rebind_new_endpoint_drops_token(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        await stack.command(f"bind echo {stack.agent_url} token=t0k3n")
        moved = await stack.command("bind echo http://127.0.0.1:9/relay")
        listed = await stack.command("list")
    assert "The old token was dropped because the endpoint changed" in moved
    assert "token set" not in listed


async def test_names_differing_in_case_rejected(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        await stack.command(f"bind echo {stack.agent_url}")
        reply = await stack.command(f"bind ECHO {stack.agent_url}")
        listed = await stack.command("list")
    assert "'echo' is already bound in this channel" in reply
    assert "ECHO" not in listed


async def test_status_keeps_real_cause_after_circuit_opens(tmp_path):
    from test_e2e_serve import closed_port

    async with running_stack(tmp_path / "data", RELAY_BREAKER_FAILURES="1",
                             RELAY_BREAKER_OPEN_S="60") as stack:  # fmt: skip
        await stack.command(f"bind down http://127.0.0.1:{closed_port()}")
        for word in ("one", "two"):
            event = await stack.mention(f"down {word}")
            await stack.final_replies("C0001", event["ts"])
        status = await stack.command("status")
    assert "breaker open" in status
    assert "cannot connect" in status or "refused" in status
    assert "circuit open" not in status
