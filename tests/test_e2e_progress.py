"""Working notes, the Cancel button, asynchronous answers through the callback, over real HTTP."""

import asyncio
import json

import aiohttp
import pytest

from harness import running_stack
from relay_plugin.core.callback_auth import signed_headers
from test_e2e_serve import closed_port

TOKEN = "agent-token-1"


def public_env():
    port = closed_port()
    return {"PORT": str(port), "RELAY_PUBLIC_URL": f"http://127.0.0.1:{port}"}


async def working_note(stack, ts):
    await stack.sim.wait_for(lambda: stack.working_note("C0001", ts), description="working note")
    return stack.working_note("C0001", ts)


def final_texts(stack, ts):
    return [m.text for m in stack.bot_replies("C0001", ts)]


async def post_report(stack, body: dict, *, key=TOKEN, headers=None):
    raw = json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or signed_headers(key, raw))}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{stack.app.url}/relay/callback", data=raw, headers=sent) as response:
            return response.status, await response.json()


async def test_working_note_shows_progress_and_cancel(tmp_path):
    async with running_stack(tmp_path / "data", agent_mode="delay:1.5",
                             RELAY_STATUS_INTERVAL_S="0.3") as stack:  # fmt: skip
        await stack.command(f"bind slow {stack.agent_url}")
        event = await stack.mention("slow think")
        note = await working_note(stack, event["ts"])
        await stack.sim.wait_for(lambda: note.updates >= 2, description="two status updates")
        section = note.blocks[0]["text"]["text"]
        buttons = note.blocks[1]["elements"]
        await stack.final_replies("C0001", event["ts"])
    assert "*slow* is working on it: waiting for the answer" in section
    assert " s" in section
    assert buttons[0]["text"]["text"] == "Cancel"
    assert buttons[0]["action_id"] == "relay_cancel"


async def test_retry_shown_in_working_note(tmp_path):
    async with running_stack(tmp_path / "data", agent_mode="fail-first:1",
                             RELAY_RETRY_BASE_S="1.5", RELAY_STATUS_INTERVAL_S="0.3") as stack:  # fmt: skip
        await stack.command(f"bind flaky {stack.agent_url}")
        event = await stack.mention("flaky again")
        note = await working_note(stack, event["ts"])
        await stack.sim.wait_for(lambda: "retrying in" in json.dumps(note.blocks),
                                 description="retry shown")  # fmt: skip
        shown = note.blocks[0]["text"]["text"]
        replies = await stack.final_replies("C0001", event["ts"])
    assert "retrying in 2 s after attempt 1 failed" in shown
    assert replies[0].blocks[0]["text"] == "echo: again"


@pytest.mark.parametrize("transport", ["http", "socket"])
async def test_cancel_while_working(tmp_path, transport):
    async with running_stack(tmp_path / "data", agent_mode="delay:30", transport=transport) as stack:
        await stack.command(f"bind slow {stack.agent_url}")
        event = await stack.mention("slow forever")
        note = await working_note(stack, event["ts"])
        await stack.sim.wait_for(lambda: stack.agent.received, description="relay sent")
        await stack.click_cancel(note)
        await stack.sim.wait_for(lambda: "Canceled by" in note.text, description="canceled note")
        await stack.sim.wait_for(lambda: stack.agent.canceled, description="cancel notice")
        task_id = json.loads(stack.agent.received[0].body)["task_id"]
    assert note.text.startswith(":no_entry_sign: Canceled by @alice after")
    assert stack.agent.canceled == [task_id]
    assert len(stack.bot_replies("C0001", event["ts"])) == 1
    assert any("relay canceled by user=U0001" in line for line in stack.app.logs)


async def test_cancel_by_other_member_refused(tmp_path):
    async with running_stack(tmp_path / "data", agent_mode="delay:3") as stack:
        await stack.command(f"bind slow {stack.agent_url}")
        event = await stack.mention("slow mine", user="U0001")
        note = await working_note(stack, event["ts"])
        await stack.click_cancel(note, user="U0002")
        await stack.sim.wait_for(lambda: stack.sim.ephemerals("C0001", "U0002"),
                                 description="refusal")  # fmt: skip
        refusal = stack.sim.ephemerals("C0001", "U0002")[-1].text
        replies = await stack.final_replies("C0001", event["ts"])
    assert "Only <@U0001>, who asked, or a workspace admin can cancel" in refusal
    assert replies[0].blocks[0]["text"] == "echo: mine"


async def test_admin_may_cancel_others(tmp_path):
    async with running_stack(tmp_path / "data", agent_mode="delay:30") as stack:
        await stack.command(f"bind slow {stack.agent_url}")
        event = await stack.mention("slow theirs", user="U0002")
        note = await working_note(stack, event["ts"])
        await stack.click_cancel(note, user="U0001")
        await stack.sim.wait_for(lambda: "Canceled by @alice" in note.text, description="canceled")
    assert "Canceled by @alice" in note.text


async def test_cancel_racing_completion_ends_once(tmp_path):
    async with running_stack(tmp_path / "data", agent_mode="delay:0.3") as stack:
        await stack.command(f"bind racer {stack.agent_url}")
        threads = []
        for index, delay in enumerate([0.2, 0.25, 0.28, 0.3, 0.32, 0.35, 0.4, 0.6]):
            event = await stack.mention(f"racer run {index}", user="U0001")
            note = await working_note(stack, event["ts"])
            button = note.blocks[1]["elements"][0]
            await asyncio.sleep(delay)
            await stack.click_cancel(note, action=button)
            threads.append((event["ts"], note))
        for ts, note in threads:
            await stack.sim.wait_for(lambda: "waiting for the answer" not in note.text,
                                     description="final state")  # fmt: skip
        await asyncio.sleep(0.5)  # let any late update land, so a double final state would show
        finals = [(stack.bot_replies("C0001", ts), note) for ts, note in threads]
    outcomes = set()
    for replies, note in finals:
        assert len(replies) == 1
        canceled = note.text.startswith(":no_entry_sign: Canceled by")
        answered = bool(note.blocks) and note.blocks[0].get("type") == "markdown"
        assert canceled != answered
        outcomes.add("canceled" if canceled else "answered")
    # A click at 0.2 s comes before the 0.3 s answer and one at 0.6 s after it.
    assert outcomes == {"canceled", "answered"}


async def test_cancel_after_answer_says_finished(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        await stack.command(f"bind echo {stack.agent_url}")
        event = await stack.mention("echo quick")
        await stack.final_replies("C0001", event["ts"])
        note = stack.bot_replies("C0001", event["ts"])[0]
        stale = type(note)(**{**note.__dict__, "blocks": [
            {"type": "actions", "elements": [{"action_id": "relay_cancel", "value": "x", "type": "button",
                                              "text": {"type": "plain_text", "text": "Cancel"}}]}]})  # fmt: skip
        before = len(stack.sim.ephemerals("C0001", "U0001"))
        await stack.click_cancel(stale)
        await stack.sim.wait_for(lambda: len(stack.sim.ephemerals("C0001", "U0001")) > before,
                                 description="reply")  # fmt: skip
        told = stack.sim.ephemerals("C0001", "U0001")[-1].text
    assert told == "This relay has already finished."
    assert note.blocks[0]["text"] == "echo: quick"


async def test_async_answer_through_callback(tmp_path):
    env = public_env()
    async with running_stack(tmp_path / "data", agent_mode="async:0.3", agent_token=TOKEN,
                             **env) as stack:  # fmt: skip
        await stack.command(f"bind later {stack.agent_url} token={TOKEN}")
        event = await stack.mention("later please")
        replies = await stack.final_replies("C0001", event["ts"])
        sent = json.loads(stack.agent.received[0].body)
    assert json.loads(sent["metadata"])["reply_to"] == env["RELAY_PUBLIC_URL"] + "/relay/callback"
    assert stack.agent.reports == [200]
    assert replies[0].blocks[0]["text"] == "echo: please"


async def test_forged_and_duplicate_callbacks(tmp_path):
    async with running_stack(tmp_path / "data", agent_mode="async:30", agent_token=TOKEN,
                             **public_env()) as stack:  # fmt: skip
        await stack.command(f"bind later {stack.agent_url} token={TOKEN}")
        event = await stack.mention("later one")
        await stack.app.wait_for_log("waiting up to")
        task_id = json.loads(stack.agent.received[0].body)["task_id"]
        report = {"task_id": task_id, "status": "completed", "response": "signed answer"}
        forged = await post_report(stack, {**report, "response": "forged"}, key="wrong-key")
        bearer_forged = await post_report(stack, report, headers={"Authorization": "Bearer nope"})
        genuine = await post_report(stack, report)
        duplicate = await post_report(stack, report)
        replies = await stack.final_replies("C0001", event["ts"])
    assert forged[0] == 401
    assert forged[1]["error"] == "wrong signature"
    assert bearer_forged[0] == 401
    assert genuine == (200, {"ok": True})
    assert duplicate[0] == 404
    assert len(replies) == 1
    assert replies[0].blocks[0]["text"] == "signed answer"


async def test_pending_task_survives_restart(tmp_path):
    env = public_env()
    data = tmp_path / "data"
    async with running_stack(data, agent_mode="async:30", agent_token=TOKEN, **env) as first:
        await first.command(f"bind later {first.agent_url} token={TOKEN}")
        event = await first.mention("later across restarts")
        await first.sim.wait_for(lambda: first.agent.received, description="relay sent")
        task_id = json.loads(first.agent.received[0].body)["task_id"]
        await first.app.wait_for_log("waiting up to")
        thread = first.sim.thread("C0001", event["ts"])
    async with running_stack(data, agent_token=TOKEN, **env) as second:
        for message in thread:  # the new simulator starts empty; give it the old thread
            second.sim.store(message)
        status, _ = await post_report(second, {"task_id": task_id, "status": "completed",
                                               "response": "after the restart"})  # fmt: skip
        replies = await second.final_replies("C0001", event["ts"])
    assert status == 200
    assert replies[0].blocks[0]["text"] == "after the restart"


async def test_silent_async_task_times_out(tmp_path):
    async with running_stack(tmp_path / "data", agent_mode="async:30", agent_token=TOKEN,
                             RELAY_ASYNC_TIMEOUT_S="1", **public_env()) as stack:  # fmt: skip
        await stack.command(f"bind later {stack.agent_url} token={TOKEN}")
        event = await stack.mention("later never")
        replies = await stack.final_replies("C0001", event["ts"], timeout=15)
    assert "did not report back within 1 s" in replies[0].text


async def test_cancel_pending_async_task(tmp_path):
    async with running_stack(tmp_path / "data", agent_mode="async:30", agent_token=TOKEN,
                             **public_env()) as stack:  # fmt: skip
        await stack.command(f"bind later {stack.agent_url} token={TOKEN}")
        event = await stack.mention("later stop")
        note = await working_note(stack, event["ts"])
        await stack.app.wait_for_log("waiting up to")
        await stack.click_cancel(note)
        await stack.sim.wait_for(lambda: "Canceled by" in note.text, description="canceled")
        await stack.sim.wait_for(lambda: stack.agent.canceled, description="cancel notice")
        task_id = json.loads(stack.agent.received[0].body)["task_id"]
        late = await post_report(stack, {"task_id": task_id, "status": "completed", "response": "late"})
    assert late[0] == 404
    assert note.text.startswith(":no_entry_sign: Canceled by @alice")


async def test_assistant_status_set_and_cleared(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        await stack.command(f"bind echo {stack.agent_url}", channel="D0001")
        event = await stack.mention("echo status", channel="D0001")
        await stack.final_replies("D0001", event["ts"])
        key = ("D0001", event["ts"])
        await stack.sim.wait_for(lambda: len(stack.sim.assistant_statuses.get(key, [])) == 2,
                                 description="status set and cleared")  # fmt: skip
    assert stack.sim.assistant_statuses[key] == ["is asking echo…", ""]


async def test_assistant_status_failure_never_blocks(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        await stack.command(f"bind echo {stack.agent_url}", channel="D0001")
        stack.sim.fail_next("assistant.threads.setStatus", "missing_scope")
        first = await stack.mention("echo one", channel="D0001")
        replies = await stack.final_replies("D0001", first["ts"])
        second = await stack.mention("echo two", channel="D0001")
        await stack.final_replies("D0001", second["ts"])
    assert replies[0].blocks[0]["text"] == "echo: one"
    assert ("D0001", second["ts"]) not in stack.sim.assistant_statuses
    assert any("thread statuses are off" in line for line in stack.app.logs)


async def test_assistant_status_skipped_in_channels(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        await stack.command(f"bind echo {stack.agent_url}")
        event = await stack.mention("echo plain channel")
        await stack.final_replies("C0001", event["ts"])
        calls = [call.method for call in stack.sim.calls]
    assert "assistant.threads.setStatus" not in calls


async def test_test_command_with_async_bot(tmp_path):
    async with running_stack(tmp_path / "data", agent_mode="async:30", agent_token=TOKEN) as stack:
        await stack.command(f"bind later {stack.agent_url} token={TOKEN}")
        await stack.command("test later")
        await stack.sim.wait_for(lambda: stack.sim.responses, description="test result")
        result = stack.sim.responses[-1]["text"]
    assert "*later* is reachable: it accepted the ping" in result
    assert "does not wait for such reports" in result
