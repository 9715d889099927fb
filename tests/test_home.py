"""The App Home tab through the real app process, and the simulator methods behind it."""

import time

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from harness import running_stack
from relay_plugin.tools.simulator import SlackSimulator

ALICE = "U0001"  # a workspace admin in the simulator's default users
BOB = "U0002"  # a plain member


def home_event(user: str, tab: str = "home") -> dict:
    return {"type": "app_home_opened", "user": user, "channel": f"D{user[1:]}", "tab": tab,
            "event_ts": f"{time.time():.6f}"}  # fmt: skip


def view_text(view: dict) -> str:
    """Return every text of a view's blocks, one block per line."""
    texts = []
    for block in view["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        for element in block.get("elements", []):
            texts.append(element["text"])
    return "\n".join(texts)


@pytest.fixture
async def sim():
    channels = {"C0002": {}, "G0003": {}, "G0004": {"is_member": False}}
    async with SlackSimulator(channels=channels) as simulator:
        yield simulator


@pytest.fixture
def client(sim):
    return AsyncWebClient(token=sim.bot_token, base_url=sim.api_url)


async def conversation_ids(client: AsyncWebClient, **kwargs) -> list[str]:
    response = await client.users_conversations(**kwargs)
    return [channel["id"] for channel in response["channels"]]


async def test_users_conversations_default_members(client):
    ids = await conversation_ids(client, user=BOB, types="public_channel,private_channel")
    assert ids == ["C0001", "C0002", "G0003"]


async def test_users_conversations_public_by_default(client):
    assert await conversation_ids(client, user=BOB) == ["C0001", "C0002"]


async def test_users_conversations_membership_change(sim, client):
    sim.members["C0002"].discard(BOB)
    assert await conversation_ids(client, user=BOB) == ["C0001"]


async def test_users_conversations_private_needs_bot(sim, client):
    # G0004 has Bob as a member, but the bot is not in it, so a bot token does not see it.
    ids = await conversation_ids(client, user=BOB, types="private_channel")
    assert ids == ["G0003"]


async def test_users_conversations_pages(client):
    first = await client.users_conversations(user=BOB, types="public_channel,private_channel",
                                             limit=2)  # fmt: skip
    cursor = first["response_metadata"]["next_cursor"]
    second = await client.users_conversations(
        user=BOB, types="public_channel,private_channel", limit=2, cursor=cursor
    )
    assert [c["id"] for c in first["channels"]] == ["C0001", "C0002"]
    assert [c["id"] for c in second["channels"]] == ["G0003"]
    assert second["response_metadata"]["next_cursor"] == ""
    assert "is_member" not in first["channels"][0]


async def test_users_conversations_unknown_user(client):
    with pytest.raises(SlackApiError) as raised:
        await client.users_conversations(user="U9999")
    assert raised.value.response["error"] == "user_not_found"


async def test_views_publish_recorded(sim, client):
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}
    view = {"type": "home", "blocks": [section]}
    await client.views_publish(user_id=BOB, view=view)
    assert sim.home_views[BOB] == view


async def test_views_publish_block_limit(sim, client):
    block = {"type": "divider"}
    await client.views_publish(user_id=BOB, view={"type": "home", "blocks": [block] * 100})
    with pytest.raises(SlackApiError) as raised:
        await client.views_publish(user_id=BOB, view={"type": "home", "blocks": [block] * 101})
    assert raised.value.response["error"] == "invalid_arguments"
    assert len(sim.home_views[BOB]["blocks"]) == 100


async def test_views_publish_rejects_modal(client):
    with pytest.raises(SlackApiError) as raised:
        await client.views_publish(user_id=BOB, view={"type": "modal", "blocks": []})
    assert raised.value.response["error"] == "invalid_arguments"


async def open_home(stack, user: str) -> str:
    stack.sim.home_views.pop(user, None)
    status = await stack.slack.send_event(home_event(user))
    assert status == 200
    await stack.sim.wait_for(lambda: user in stack.sim.home_views, description=f"{user}'s Home tab")
    return view_text(stack.sim.home_views[user])


async def bind_three(stack) -> None:
    """Bind a bot in each of C0001-C0003. Bob is in C0001 and C0002, and C0003 has no members."""
    await stack.command(f"bind echo {stack.agent_url}", channel="C0001")
    await stack.command(f"bind helper {stack.agent_url}/v2/relay", channel="C0002")
    await stack.command(f"bind secret {stack.agent_url}", channel="C0003")
    stack.sim.members["C0003"] = set()
    stack.sim.members["C0001"].discard(ALICE)


async def test_home_member_sees_own_channels(tmp_path):
    async with running_stack(tmp_path / "data", channels={"C0002": {}, "C0003": {}}) as stack:
        await bind_three(stack)
        event = await stack.mention("echo hello")
        await stack.final_replies("C0001", event["ts"])
        text = await open_home(stack, BOB)
    assert "*<#C0001>*" in text
    assert "*<#C0002>*" in text
    assert "<#C0003>" not in text
    assert "secret" not in text
    assert "• *echo* → " in text
    assert "breaker closed · last success <!date^" in text
    assert "• *helper* → " in text
    assert "last success never" in text
    assert "/relay bind <bot> <url>" in text
    assert "Only workspace admins and owners may bind" in text


async def test_home_admin_sees_all(tmp_path):
    async with running_stack(tmp_path / "data", channels={"C0002": {}, "C0003": {}}) as stack:
        await bind_three(stack)
        text = await open_home(stack, ALICE)
    assert "You are an admin" in text
    for channel in ("C0001", "C0002", "C0003"):
        assert f"*<#{channel}>*" in text
    assert "• *secret* → " in text
    assert "Only workspace admins" not in text


async def test_home_other_tabs_ignored(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        status = await stack.slack.send_event(home_event(BOB, tab="messages"))
        await open_home(stack, ALICE)
    assert status == 200
    assert BOB not in stack.sim.home_views


async def test_home_without_channel_scope(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        await stack.command(f"bind echo {stack.agent_url}")
        stack.sim.fail_next("users.conversations", "missing_scope")
        text = await open_home(stack, BOB)
    assert "Slack answered `missing_scope`" in text
    assert "`channels:read` and `groups:read`" in text
    assert "echo" not in text


async def test_home_channel_list_cached(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        await open_home(stack, BOB)
        await open_home(stack, BOB)
    lookups = [call for call in stack.sim.calls if call.method == "users.conversations"]
    assert len(lookups) == 1
