"""Mentions end to end over signed HTTP and over Socket Mode, with replies in the simulator's threads."""

import asyncio
import json
import uuid

import pytest

from harness import TRANSPORTS, running_stack
from relay_plugin.tools.slack_client import mention_text


@pytest.fixture(params=TRANSPORTS)
async def stack(request, tmp_path):
    async with running_stack(
        tmp_path / "data", transport=request.param, RELAY_BREAKER_OPEN_S="60"
    ) as running:
        await running.command(f"bind echo {running.agent_url}")
        yield running


@pytest.fixture
async def http_stack(tmp_path):
    async with running_stack(tmp_path / "data", transport="http") as running:
        await running.command(f"bind echo {running.agent_url}")
        yield running


def received_messages(stack):
    return [json.loads(request.body) for request in stack.agent.received]


async def test_mention_relays_every_field(stack):
    event = await stack.mention("echo hello &amp; <https://example.com/pr/1|PR 1>", user="U0002")
    replies = await stack.final_replies("C0001", event["ts"])
    sent = received_messages(stack)[0]
    headers = stack.agent.received[0].headers
    assert sent["content"] == "hello & PR 1 (https://example.com/pr/1)"
    assert sent["message"] == sent["content"]
    assert sent["from"] == "e2e-relay"
    assert sent["to"] == "echo"
    assert uuid.UUID(sent["task_id"]).version == 5
    assert headers["Idempotency-Key"] == sent["task_id"]
    assert headers["User-Agent"].startswith("relay-plugin/")
    assert sent["session_key"] == f"slack:T0001:C0001:{event['ts']}:echo"
    assert json.loads(sent["metadata"]) == {
        "platform": "slack", "team": "T0001", "channel": "C0001", "user": "U0002",
        "ts": event["ts"], "thread_ts": event["ts"],
    }  # fmt: skip
    assert sent["created_at"].endswith("Z")
    assert len(replies) == 1
    assert replies[0].blocks[0] == {"type": "markdown", "text": "echo: " + sent["content"]}


async def test_answer_replaces_working_note(stack):
    event = await stack.mention("echo hi")
    replies = await stack.final_replies("C0001", event["ts"])
    calls = [call.method for call in stack.sim.calls]
    assert replies[0].updates == 1
    assert "chat.update" in calls


async def test_mention_in_thread_keeps_session(stack):
    root = await stack.mention("echo first")
    await stack.final_replies("C0001", root["ts"])
    follow = await stack.mention("echo second", thread_ts=root["ts"], user="U0002")
    replies = await stack.final_replies("C0001", root["ts"], count=2)
    first, second = received_messages(stack)
    assert first["session_key"] == second["session_key"]
    assert first["task_id"] != second["task_id"]
    assert json.loads(second["metadata"])["thread_ts"] == root["ts"]
    assert json.loads(second["metadata"])["ts"] == follow["ts"]
    assert all(reply.thread_ts == root["ts"] for reply in replies)


async def test_colon_form_and_single_bot_fallback(stack):
    colon = await stack.mention("echo: with colon")
    await stack.final_replies("C0001", colon["ts"])
    whole = await stack.mention("no bot name here")
    await stack.final_replies("C0001", whole["ts"])
    contents = [m["content"] for m in received_messages(stack)]
    assert contents == ["with colon", "no bot name here"]


async def test_unknown_bot_lists_bound(stack):
    await stack.command(f"bind other {stack.agent_url}")
    event = await stack.mention("ghost do it")
    replies = await stack.final_replies("C0001", event["ts"])
    assert "Bound here: `echo`, `other`" in replies[0].text
    assert stack.agent.received == []


async def mention_then_marker(stack, **kwargs):
    """Send an ignored mention, then a human one; once the human one is answered, the first was handled."""
    status, envelope = await stack.slack.mention(
        mention_text(stack.sim.bot_user_id, "echo ignored?"), **kwargs
    )
    marker = await stack.mention("echo marker")
    await stack.final_replies("C0001", marker["ts"])
    return status, envelope["event"]


async def test_message_from_bot_ignored(stack):
    status, event = await mention_then_marker(stack, bot_id="B0OTHER")
    assert status == 200
    assert [m["content"] for m in received_messages(stack)] == ["marker"]
    assert stack.bot_replies("C0001", event["ts"]) == []


async def test_own_message_ignored(stack):
    status, event = await mention_then_marker(stack, user=stack.sim.bot_user_id)
    assert status == 200
    assert [m["content"] for m in received_messages(stack)] == ["marker"]


async def test_slack_retry_relays_once(stack):
    status, envelope = await stack.slack.mention(mention_text(stack.sim.bot_user_id, "echo once"))
    event = envelope["event"]
    await stack.final_replies("C0001", event["ts"])
    retry_status, _ = await stack.slack.mention(
        event["text"], ts=event["ts"], event_id=envelope["event_id"], retry_num=1
    )
    await stack.app.wait_for_log("ignored a repeated event")
    assert status == retry_status == 200
    assert stack.agent.runs == 1
    assert len(stack.bot_replies("C0001", event["ts"])) == 1


async def test_same_message_new_event_id_relays_once(stack):
    status, envelope = await stack.slack.mention(mention_text(stack.sim.bot_user_id, "echo dup"))
    ts = envelope["event"]["ts"]
    await stack.final_replies("C0001", ts)
    await stack.slack.mention(envelope["event"]["text"], ts=ts)
    await stack.app.wait_for_log("ignored a repeated event")
    assert len(stack.agent.received) == 1


async def test_bad_signature_relays_nothing(http_stack):
    event = {"type": "app_mention", "user": "U0001", "channel": "C0001", "ts": "1.000001",
             "text": mention_text(http_stack.sim.bot_user_id, "echo forged")}  # fmt: skip
    status = await http_stack.slack.send_event(event, signature="v0=" + "ab" * 32)
    assert status == 401
    assert http_stack.agent.received == []


async def test_stale_timestamp_rejected(http_stack):
    event = {"type": "app_mention", "user": "U0001", "channel": "C0001", "ts": "1.000002",
             "text": mention_text(http_stack.sim.bot_user_id, "echo replay")}  # fmt: skip
    status = await http_stack.slack.send_event(event, timestamp=1_700_000_000)
    assert status == 401


async def test_long_answer_split_into_replies(stack):
    paragraph = "lorem ipsum " * 100  # 1,200 characters
    text = "\n\n".join([paragraph] * 12)  # about 14,500 characters with the echo prefix
    event = await stack.mention(f"echo {text}")
    replies = await stack.final_replies("C0001", event["ts"], count=2)
    shown = [r.blocks[0]["text"] for r in replies]
    assert len(replies) == 2
    assert all(len(part) <= 12_000 for part in shown)
    assert "".join(shown).count("lorem ipsum") == 1200


async def test_answer_cannot_ping_channel(stack):
    event = await stack.mention("echo <!channel> and <!here>")
    replies = await stack.final_replies("C0001", event["ts"])
    assert "<!channel>" not in replies[0].blocks[0]["text"]
    assert "<!here>" not in replies[0].text
    assert "@channel" in replies[0].blocks[0]["text"]


async def test_mention_names_resolved(stack):
    event = await stack.mention("echo ask <@U0002> please")
    await stack.final_replies("C0001", event["ts"])
    assert received_messages(stack)[0]["content"] == "ask @bob please"


async def test_failed_update_posts_answer_instead(stack):
    stack.sim.fail_next("chat.update", "message_not_found")
    event = await stack.mention("echo still arrives")
    await stack.sim.wait_for(
        lambda: any(r.blocks and r.blocks[0].get("text") == "echo: still arrives"
                    for r in stack.bot_replies("C0001", event["ts"])),  # fmt: skip
        description="the answer posted as a new reply",
    )
    line = await stack.app.wait_for_log("chat.update failed")
    assert "message_not_found" in line
    assert "task=" in line


async def test_unpostable_working_note_stops_relay(stack):
    stack.sim.fail_next("chat.postMessage", "channel_not_found", times=1)
    event = await stack.mention("echo lost note")
    line = await stack.app.wait_for_log("chat.postMessage failed")
    stopped = await stack.app.wait_for_log("relay stopped: its working note could not be posted")
    await asyncio.sleep(0.3)  # an answer that slipped through would be posted by now
    assert "channel_not_found" in line
    assert "task=" in stopped
    assert stack.bot_replies("C0001", event["ts"]) == []
