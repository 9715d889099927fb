"""Tests of the Slack simulator and the signed client, through slack_sdk and slack_bolt."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from relay_plugin.tools.simulator import SlackSimulator, render_thread
from relay_plugin.tools.slack_client import (
    SignedSlackClient,
    mention_text,
    slack_signature,
)

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"

# A slash-command request signed with Slack's v0 scheme: the signing secret, the Unix timestamp,
# the raw form body byte for byte, and the X-Slack-Signature that Slack would send with them.
VECTOR_SECRET = "0123456789abcdef0123456789abcdef"
VECTOR_TIMESTAMP = 1700000000
VECTOR_BODY = (
    b"token=XXXXdeprecatedXXXX&team_id=T0001&team_domain=example&channel_id=C0001"
    b"&channel_name=eng-reviews&user_id=U0001&user_name=alice&command=%2Frelay"
    b"&text=bind+security-bot+https%3A%2F%2Fbots.example.com%2Frelay&api_app_id=A0001"
    b"&is_enterprise_install=false&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands"
    b"%2FT0001%2F1111111111%2FabcdefABCDEF0123"
    b"&trigger_id=1111111111.2222222222.0123456789abcdef0123456789abcdef"
)
VECTOR_SIGNATURE = "v0=24e1f29135b34bd5ad08fa6c4a60252fd61dcacbf78452d32e996f8aba3488e4"

TS = "1700000100.000200"


@pytest.fixture
async def sim() -> AsyncIterator[SlackSimulator]:
    async with SlackSimulator() as simulator:
        yield simulator


@pytest.fixture
def client(sim: SlackSimulator) -> AsyncWebClient:
    return AsyncWebClient(token=sim.bot_token, base_url=sim.api_url)


async def raw_call(sim: SlackSimulator, method: str, **kwargs: Any) -> tuple[int, str, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.post(sim.api_url + method, **kwargs) as response:
            return response.status, response.headers["Content-Type"], await response.json()


# Web API methods


async def test_auth_test_identity(client: AsyncWebClient) -> None:
    response = await client.auth_test()

    assert response["user_id"] == "U0RELAY"
    assert response["bot_id"] == "B0RELAY"
    assert response["team_id"] == "T0001"


async def test_wrong_token_invalid_auth(sim: SlackSimulator) -> None:
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=sim.api_url)

    with pytest.raises(SlackApiError) as caught:
        await wrong.auth_test()

    assert caught.value.response["error"] == "invalid_auth"


async def test_missing_token_not_authed(sim: SlackSimulator) -> None:
    _, _, body = await raw_call(sim, "auth.test")

    assert body == {"ok": False, "error": "not_authed"}


async def test_token_form_field(sim: SlackSimulator) -> None:
    status, content_type, body = await raw_call(sim, "auth.test", data={"token": "xoxb-test"})

    assert status == 200
    assert content_type == "application/json; charset=utf-8"
    assert body["ok"] is True


async def test_unknown_method(sim: SlackSimulator) -> None:
    status, _, body = await raw_call(sim, "chat.scheduleDance", data={"token": "xoxb-test"})

    assert status == 200
    assert body == {"ok": False, "error": "unknown_method"}


async def test_calls_recorded(sim: SlackSimulator, client: AsyncWebClient) -> None:
    await client.users_info(user="U0002")

    call = sim.calls[-1]
    assert call.method == "users.info"
    assert call.http_method == "GET"
    assert call.params == {"user": "U0002"}
    assert call.headers["Authorization"] == "Bearer xoxb-test"


async def test_post_message_stored(sim: SlackSimulator, client: AsyncWebClient) -> None:
    response = await client.chat_postMessage(channel="C0001", text="hello")

    stored = sim.messages("C0001")
    assert response["ts"] == stored[0].ts
    assert response["message"]["bot_id"] == "B0RELAY"
    assert stored[0].text == "hello"
    assert stored[0].user == "U0RELAY"


async def test_ts_increasing(sim: SlackSimulator, client: AsyncWebClient) -> None:
    first = await client.chat_postMessage(channel="C0001", text="one")
    human = sim.add_message("C0001", "two", "U0001")
    third = await client.chat_postMessage(channel="C0001", text="three")

    timestamps = [first["ts"], human.ts, third["ts"]]
    assert [float(ts) for ts in timestamps] == sorted(float(ts) for ts in timestamps)
    assert len(set(timestamps)) == 3
    assert [m.text for m in sim.messages("C0001")] == ["one", "two", "three"]


async def test_thread_root_and_replies(sim: SlackSimulator, client: AsyncWebClient) -> None:
    root = sim.add_message("C0001", "question", "U0001")
    other = sim.add_message("C0001", "another topic", "U0002")
    await client.chat_postMessage(channel="C0001", text="answer", thread_ts=root.ts)
    await client.chat_postMessage(channel="C0001", text="elsewhere", thread_ts=other.ts)

    thread = sim.thread("C0001", root.ts)

    assert [m.text for m in thread] == ["question", "answer"]
    assert thread[1].thread_ts == root.ts


LONG_MARKDOWN = {"type": "markdown", "text": "m" * 12_001}
LONG_SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3001}}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"text": "x" * 40_001}, "msg_too_long"),
        ({"text": "long", "blocks": [LONG_MARKDOWN]}, "invalid_blocks"),
        ({"text": "long", "blocks": [LONG_SECTION]}, "invalid_blocks"),
        ({"text": "many", "blocks": [{"type": "divider"}] * 51}, "invalid_blocks"),
        ({"text": "json", "blocks": "{not json"}, "invalid_blocks_format"),
        ({"text": "x", "channel": "nowhere"}, "channel_not_found"),
    ],
    ids=["too-long", "markdown-block", "section-text", "51-blocks", "bad-json", "bad-channel"],
)
async def test_post_message_rejected(
    sim: SlackSimulator, client: AsyncWebClient, kwargs: dict, error: str
) -> None:
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(**{"channel": "C0001", **kwargs})

    assert caught.value.response["error"] == error
    assert sim.messages("C0001") == []


async def test_post_message_no_text(sim: SlackSimulator, client: AsyncWebClient) -> None:
    # api_call skips slack_sdk's warning about a missing text, so the server's error shows.
    with pytest.raises(SlackApiError) as caught:
        await client.api_call("chat.postMessage", json={"channel": "C0001", "text": ""})

    assert caught.value.response["error"] == "no_text"


async def test_markdown_block_at_limit(sim: SlackSimulator, client: AsyncWebClient) -> None:
    blocks = [{"type": "markdown", "text": "m" * 12_000}]

    await client.chat_postMessage(channel="C0001", text="fallback", blocks=blocks)

    assert sim.messages("C0001")[0].blocks == blocks


async def test_update_replaces_text(sim: SlackSimulator, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="C0001", text="working...")

    response = await client.chat_update(channel="C0001", ts=posted["ts"], text="done")

    stored = sim.messages("C0001")
    assert response["text"] == "done"
    assert len(stored) == 1
    assert stored[0].text == "done"
    assert stored[0].updates == 1


async def test_update_keeps_blocks(sim: SlackSimulator, client: AsyncWebClient) -> None:
    blocks = [{"type": "markdown", "text": "**bold**"}]
    posted = await client.chat_postMessage(channel="C0001", text="a", blocks=blocks)

    await client.chat_update(channel="C0001", ts=posted["ts"], text="b")

    assert sim.messages("C0001")[0].blocks == blocks


async def test_update_unknown_ts(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as caught:
        await client.chat_update(channel="C0001", ts="1700000000.000001", text="x")

    assert caught.value.response["error"] == "message_not_found"


async def test_update_human_message(sim: SlackSimulator, client: AsyncWebClient) -> None:
    human = sim.add_message("C0001", "mine", "U0001")

    with pytest.raises(SlackApiError) as caught:
        await client.chat_update(channel="C0001", ts=human.ts, text="edited")

    assert caught.value.response["error"] == "cant_update_message"


async def test_post_ephemeral(sim: SlackSimulator, client: AsyncWebClient) -> None:
    response = await client.chat_postEphemeral(channel="C0001", user="U0002", text="psst")

    assert response["message_ts"] == sim.ephemerals("C0001")[0].ts
    assert [m.text for m in sim.ephemerals("C0001", "U0002")] == ["psst"]
    assert sim.ephemerals("C0001", "U0001") == []
    assert sim.messages("C0001") == []


async def test_post_ephemeral_unknown_user(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postEphemeral(channel="C0001", user="U9999", text="psst")

    assert caught.value.response["error"] == "user_not_in_channel"


async def test_users_info_default_users(client: AsyncWebClient) -> None:
    alice = await client.users_info(user="U0001")
    bob = await client.users_info(user="U0002")

    assert alice["user"]["name"] == "alice"
    assert alice["user"]["is_admin"] is True
    assert bob["user"]["is_admin"] is False


async def test_users_info_not_found(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as caught:
        await client.users_info(user="U9999")

    assert caught.value.response["error"] == "user_not_found"


async def test_users_info_custom_users() -> None:
    async with SlackSimulator(users={"U0042": {"name": "carol", "is_owner": True}}) as sim:
        client = AsyncWebClient(token=sim.bot_token, base_url=sim.api_url)
        carol = await client.users_info(user="U0042")
        with pytest.raises(SlackApiError):
            await client.users_info(user="U0001")

    assert carol["user"]["is_owner"] is True
    assert carol["user"]["is_restricted"] is False


async def test_conversations_info_member(client: AsyncWebClient) -> None:
    response = await client.conversations_info(channel="C0001")

    assert response["channel"]["id"] == "C0001"
    assert response["channel"]["is_member"] is True


async def test_channel_not_member() -> None:
    async with SlackSimulator(channels={"C0002": {"is_member": False}}) as sim:
        client = AsyncWebClient(token=sim.bot_token, base_url=sim.api_url)
        info = await client.conversations_info(channel="C0002")
        with pytest.raises(SlackApiError) as caught:
            await client.chat_postMessage(channel="C0002", text="hi")

    assert info["channel"]["is_member"] is False
    assert caught.value.response["error"] == "not_in_channel"


# Injected failures


async def test_fail_next_ok_false(sim: SlackSimulator, client: AsyncWebClient) -> None:
    sim.fail_next("chat.postMessage", "fatal_error", times=2)

    errors = []
    for _ in range(2):
        with pytest.raises(SlackApiError) as caught:
            await client.chat_postMessage(channel="C0001", text="x")
        errors.append((caught.value.response.status_code, caught.value.response["error"]))
    await client.chat_postMessage(channel="C0001", text="third time")

    assert errors == [(200, "fatal_error"), (200, "fatal_error")]
    assert [m.text for m in sim.messages("C0001")] == ["third time"]


async def test_fail_next_other_method(sim: SlackSimulator, client: AsyncWebClient) -> None:
    sim.fail_next("chat.update")

    response = await client.chat_postMessage(channel="C0001", text="x")

    assert response["ok"] is True


async def test_rate_limit_without_retry(sim: SlackSimulator, client: AsyncWebClient) -> None:
    sim.fail_next("chat.postMessage", status=429, retry_after=7)

    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel="C0001", text="x")

    response = caught.value.response
    assert response.status_code == 429
    assert response["error"] == "ratelimited"
    assert response.headers["Retry-After"] == "7"


async def test_rate_limit_client_retries(sim: SlackSimulator) -> None:
    client = AsyncWebClient(
        token=sim.bot_token,
        base_url=sim.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    sim.fail_next("chat.postMessage", status=429, retry_after=0)

    response = await client.chat_postMessage(channel="C0001", text="after the wait")

    assert response["ok"] is True
    assert [call.method for call in sim.calls] == ["chat.postMessage", "chat.postMessage"]
    assert len(sim.messages("C0001")) == 1


# response_url


async def test_response_url_ephemeral(sim: SlackSimulator) -> None:
    url = sim.new_response_url(channel="C0001", user="U0002")

    response = await AsyncWebhookClient(url).send(text="bound", response_type="ephemeral")

    assert response.status_code == 200
    assert sim.responses == [{"text": "bound", "response_type": "ephemeral"}]
    assert [m.text for m in sim.ephemerals("C0001", "U0002")] == ["bound"]
    assert sim.messages("C0001") == []


async def test_response_url_in_channel(sim: SlackSimulator) -> None:
    url = sim.new_response_url()

    await AsyncWebhookClient(url).send(text="for everyone", response_type="in_channel")

    assert [m.text for m in sim.messages("C0001")] == ["for everyone"]


async def test_response_url_replace_original(sim: SlackSimulator) -> None:
    webhook = AsyncWebhookClient(sim.new_response_url())

    await webhook.send(text="working")
    await webhook.send(text="finished", replace_original=True)

    shown = sim.ephemerals("C0001")
    assert [m.text for m in shown] == ["finished"]
    assert shown[0].updates == 1


async def test_response_url_five_uses(sim: SlackSimulator) -> None:
    webhook = AsyncWebhookClient(sim.new_response_url())

    statuses = [(await webhook.send(text=f"use {n}")).status_code for n in range(6)]

    assert statuses == [200, 200, 200, 200, 200, 404]
    assert len(sim.responses) == 5


async def test_response_url_no_text(sim: SlackSimulator) -> None:
    response = await AsyncWebhookClient(sim.new_response_url()).send_dict({"response_type": "x"})

    assert response.status_code == 400
    assert sim.responses == []


async def test_response_url_fail_next(sim: SlackSimulator) -> None:
    sim.fail_next("response_url", "internal_error", status=500)
    webhook = AsyncWebhookClient(sim.new_response_url())

    first = await webhook.send(text="lost")
    second = await webhook.send(text="kept")

    assert first.status_code == 500
    assert second.status_code == 200
    assert sim.responses == [{"text": "kept"}]


# wait_for


async def test_wait_for_wakes_on_change(sim: SlackSimulator, client: AsyncWebClient) -> None:
    async def post_later() -> None:
        await asyncio.sleep(0.01)
        await client.chat_postMessage(channel="C0001", text="late")

    poster = asyncio.create_task(post_later())
    await sim.wait_for(lambda: len(sim.messages("C0001")) == 1, timeout=2)
    await poster

    assert sim.messages("C0001")[0].text == "late"


async def test_wait_for_timeout(sim: SlackSimulator) -> None:
    started = time.monotonic()

    with pytest.raises(TimeoutError, match="a reply in C0001"):
        await sim.wait_for(lambda: False, timeout=0.05, description="a reply in C0001")

    assert time.monotonic() - started < 1


# Rendering


async def test_render_thread(sim: SlackSimulator, client: AsyncWebClient) -> None:
    root = sim.add_message("C0001", "<@U0RELAY> echo review &lt;PR 42&gt;", "U0001")
    await client.chat_postMessage(
        channel="C0001",
        thread_ts=root.ts,
        text="fallback",
        blocks=[{"type": "markdown", "text": "**echo**: <looks good>"}],
    )
    await client.chat_postEphemeral(
        channel="C0001", user="U0001", thread_ts=root.ts, text="only for alice"
    )

    assert render_thread(sim, "C0001", root.ts) == (
        "alice:\n  @relay echo review <PR 42>\n\n"
        "relay (app):\n  **echo**: <looks good>\n\n"
        "relay (app): (only visible to you)\n  only for alice"
    )


async def test_render_section_markup(sim: SlackSimulator, client: AsyncWebClient) -> None:
    root = sim.add_message("C0001", "hi", "U0002")
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "<@U0002> see <https://x.test|PR>"}},
        {"type": "divider"},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "in <#C0001|general>"}]},
    ]
    await client.chat_postMessage(channel="C0001", thread_ts=root.ts, text="t", blocks=blocks)

    rendered = render_thread(sim, "C0001", root.ts)

    assert rendered.endswith("relay (app):\n  @bob see PR (https://x.test)\n  ---\n  in #general")


async def test_render_edited(sim: SlackSimulator, client: AsyncWebClient) -> None:
    root = sim.add_message("C0001", "hi", "U0002")
    posted = await client.chat_postMessage(channel="C0001", thread_ts=root.ts, text="draft")
    await client.chat_update(channel="C0001", ts=posted["ts"], text="final")

    rendered = render_thread(sim, "C0001", root.ts)

    assert rendered.endswith("relay (app): (edited)\n  final")


async def test_render_thread_viewer(sim: SlackSimulator, client: AsyncWebClient) -> None:
    root = sim.add_message("C0001", "hi", "U0001")
    await client.chat_postEphemeral(channel="C0001", user="U0001", thread_ts=root.ts, text="a")

    rendered = render_thread(sim, "C0001", root.ts, viewer="U0002")

    assert rendered == "alice:\n  hi"


# Signed client and a real Bolt app


def test_signature_known_vector() -> None:
    assert slack_signature(VECTOR_SECRET, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_signature_matches_slack_sdk() -> None:
    body = b'{"type":"url_verification","challenge":"c1"}'
    verifier = SignatureVerifier(SIGNING_SECRET)

    expected = verifier.generate_signature(timestamp="1700000123", body=body)

    assert slack_signature(SIGNING_SECRET, 1700000123, body) == expected


def test_mention_text() -> None:
    assert mention_text("U0RELAY", "echo hi") == "<@U0RELAY> echo hi"


@pytest.fixture
async def bolt(
    sim: SlackSimulator, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[list[dict], SignedSlackClient]]:
    for name in list(os.environ):
        if name.startswith("SLACK_"):
            monkeypatch.delenv(name)
    app = AsyncApp(
        client=AsyncWebClient(token=sim.bot_token, base_url=sim.api_url),
        signing_secret=SIGNING_SECRET,
    )
    seen: list[dict] = []

    @app.command("/relay")
    async def on_command(ack: Any, command: dict, respond: Any) -> None:
        await ack(f"working on {command['text']}")
        await respond(f"done: {command['text']}")

    @app.event("app_mention")
    async def on_mention(event: dict, say: Any, request: Any) -> None:
        seen.append({"event": event, "retry": request.headers.get("x-slack-retry-num", [None])[0]})
        await say(text=f"heard {event['text']}", thread_ts=event.get("thread_ts") or event["ts"])

    runner = web.AppRunner(app.web_app(path="/slack/events"))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    yield seen, SignedSlackClient(f"http://127.0.0.1:{port}/slack/events", SIGNING_SECRET, sim)
    await runner.cleanup()


async def test_bolt_command_acked(
    sim: SlackSimulator, bolt: tuple[list[dict], SignedSlackClient]
) -> None:
    _, slack = bolt

    result = await slack.command("list", user="U0002")
    await sim.wait_for(lambda: len(sim.responses) == 1)

    assert result.status == 200
    assert [m.text for m in sim.ephemerals("C0001", "U0002")] == ["working on list", "done: list"]
    assert sim.calls[0].method == "auth.test"


async def test_bolt_mention_replies(
    sim: SlackSimulator, bolt: tuple[list[dict], SignedSlackClient]
) -> None:
    seen, slack = bolt

    status, envelope = await slack.mention(mention_text("U0RELAY", "echo hi"))
    ts = envelope["event"]["ts"]
    await sim.wait_for(lambda: len(sim.thread("C0001", ts)) == 2)

    assert status == 200
    assert envelope["event_id"].startswith("Ev")
    assert envelope["authorizations"][0]["user_id"] == "U0RELAY"
    assert seen[0]["event"]["user"] == "U0001"
    assert [m.text for m in sim.thread("C0001", ts)] == [
        "<@U0RELAY> echo hi",
        "heard <@U0RELAY> echo hi",
    ]


async def test_bolt_mention_in_thread(
    sim: SlackSimulator, bolt: tuple[list[dict], SignedSlackClient]
) -> None:
    seen, slack = bolt
    root = sim.add_message("C0001", "start", "U0002")

    await slack.mention(mention_text("U0RELAY", "more"), thread_ts=root.ts)
    await sim.wait_for(lambda: len(sim.thread("C0001", root.ts)) == 3)

    assert seen[0]["event"]["thread_ts"] == root.ts
    assert seen[0]["event"]["parent_user_id"] == "U0002"


async def test_bolt_retry_headers(
    sim: SlackSimulator, bolt: tuple[list[dict], SignedSlackClient]
) -> None:
    seen, slack = bolt
    _, first = await slack.mention(mention_text("U0RELAY", "once"))
    ts, event_id = first["event"]["ts"], first["event_id"]

    _, again = await slack.mention(first["event"]["text"], ts=ts, event_id=event_id, retry_num=1)
    await sim.wait_for(lambda: len(seen) == 2)

    assert again["event_id"] == event_id
    assert [item["retry"] for item in seen] == [None, "1"]
    assert [m.user for m in sim.messages("C0001")].count("U0001") == 1


async def test_bolt_wrong_signature(
    sim: SlackSimulator, bolt: tuple[list[dict], SignedSlackClient]
) -> None:
    seen, slack = bolt
    event = {"type": "app_mention", "user": "U0001", "channel": "C0001", "text": "x", "ts": TS}

    status = await slack.send_event(event, signature="v0=" + "0" * 64)

    assert status == 401
    assert seen == []


async def test_bolt_stale_timestamp(
    sim: SlackSimulator, bolt: tuple[list[dict], SignedSlackClient]
) -> None:
    seen, slack = bolt
    event = {"type": "app_mention", "user": "U0001", "channel": "C0001", "text": "x", "ts": TS}

    status = await slack.send_event(event, timestamp=int(time.time()) - 600)

    assert status == 401
    assert seen == []


async def test_bolt_bot_message_event(
    sim: SlackSimulator, bolt: tuple[list[dict], SignedSlackClient]
) -> None:
    seen, slack = bolt

    status, envelope = await slack.mention(mention_text("U0RELAY", "loop?"), bot_id="B0OTHER")
    await sim.wait_for(lambda: len(seen) == 1)

    assert status == 200
    assert seen[0]["event"]["bot_id"] == "B0OTHER"
    assert envelope["event"]["bot_profile"]["id"] == "B0OTHER"
