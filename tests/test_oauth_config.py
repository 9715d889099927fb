"""OAuth settings, the OAuth manifest, and the simulator's authorize page and oauth.v2.access."""

from __future__ import annotations

import io
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from relay_plugin.check import Report, check
from relay_plugin.config import Settings
from relay_plugin.errors import ConfigError
from relay_plugin.slack.app import create_web_app
from relay_plugin.slack.oauth import BOT_SCOPES
from relay_plugin.tools.simulator import SlackSimulator
from relay_plugin.tools.slack_oauth import CLIENT_ID, CLIENT_SECRET

ROOT = Path(__file__).resolve().parents[1]
OAUTH = {
    "SLACK_CLIENT_ID": "1.2",
    "SLACK_CLIENT_SECRET": "client-secret",
    "SLACK_STATE_SECRET": "state-secret-0123456789",
    "SLACK_SIGNING_SECRET": "s",
    "RELAY_DATA_DIR": "/tmp/x",
}


def test_oauth_needs_no_bot_token():
    settings = Settings.from_env(OAUTH)
    assert settings.oauth is True
    assert settings.slack_bot_token == ""


def test_bot_token_ignored_in_oauth_mode():
    settings = Settings.from_env({**OAUTH, "SLACK_BOT_TOKEN": "xoxb-1"})
    assert settings.slack_bot_token == ""


def test_single_workspace_mode_without_oauth():
    settings = Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"})
    assert settings.oauth is False
    assert settings.slack_client_id == ""


@pytest.mark.parametrize("name", ["SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "SLACK_STATE_SECRET"])
def test_partial_oauth_names_missing(name):
    env = {key: value for key, value in OAUTH.items() if key != name}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.name == name
    assert f"{name} is not set" in str(caught.value)


def test_partial_oauth_lists_every_missing():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"SLACK_CLIENT_ID": "1.2", "SLACK_SIGNING_SECRET": "s"})
    assert caught.value.name == "SLACK_CLIENT_SECRET"
    assert "SLACK_CLIENT_SECRET, SLACK_STATE_SECRET are not set" in str(caught.value)


def test_bindings_tools_ignore_partial_oauth():
    settings = Settings.from_env({"SLACK_CLIENT_ID": "1.2"}, require_slack=False)
    assert settings.oauth is False


def test_short_state_secret_rejected():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**OAUTH, "SLACK_STATE_SECRET": "short"})
    assert caught.value.name == "SLACK_STATE_SECRET"
    assert "too short" in str(caught.value)


def test_oauth_still_needs_signing_secret():
    env = {key: value for key, value in OAUTH.items() if key != "SLACK_SIGNING_SECRET"}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.name == "SLACK_SIGNING_SECRET"


def test_oauth_secrets_not_in_repr():
    text = repr(Settings.from_env(OAUTH))
    assert "client-secret" not in text
    assert "state-secret" not in text


def test_redirect_uri_optional():
    settings = Settings.from_env({**OAUTH, "RELAY_PUBLIC_URL": "https://relay.example.com"})
    assert settings.slack_redirect_uri == ""


def test_redirect_uri_given():
    uri = "https://relay.example.com/slack/oauth_redirect"
    settings = Settings.from_env({**OAUTH, "SLACK_REDIRECT_URI": uri})
    assert settings.slack_redirect_uri == uri


def test_redirect_uri_must_be_url():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**OAUTH, "SLACK_REDIRECT_URI": "relay.example.com/slack"})
    assert caught.value.name == "SLACK_REDIRECT_URI"


@pytest.mark.parametrize(
    ("api_url", "authorize_url"),
    [("https://slack.com/api/", "https://slack.com/oauth/v2/authorize"),
     ("http://127.0.0.1:8000/api", "http://127.0.0.1:8000/oauth/v2/authorize")],
    ids=["slack", "local"],
)  # fmt: skip
def test_authorize_url_beside_api(api_url, authorize_url):
    settings = Settings.from_env({**OAUTH, "SLACK_API_URL": api_url})
    assert settings.slack_authorize_url == authorize_url


# Manifests


def manifest_body(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [re.sub(r"\s+#.*$", "", line) for line in lines if not line.startswith("#")]


def test_oauth_manifest_matches_http_manifest():
    http = manifest_body("manifest.yml")
    oauth = manifest_body("manifest.oauth.yml")
    added = [line for line in oauth if line not in http]
    assert [line for line in oauth if line not in added] == http
    assert added == [
        "  redirect_urls:",
        "    - https://relay.example.com/slack/oauth_redirect",
        "      - app_uninstalled",
        "      - tokens_revoked",
    ]


def test_bot_scopes_match_manifest():
    body = manifest_body("manifest.oauth.yml")
    start = body.index("    bot:") + 1
    scopes = []
    for line in body[start:]:
        if not line.startswith("      - "):
            break
        scopes.append(line.strip().removeprefix("- "))
    assert scopes == list(BOT_SCOPES)


# The simulator's OAuth side


@pytest.fixture
async def sim() -> AsyncIterator[SlackSimulator]:
    async with SlackSimulator() as simulator:
        simulator.oauth.redirect_urls = ["http://127.0.0.1:9/slack/oauth_redirect"]
        yield simulator


async def authorize(sim: SlackSimulator, **params: str) -> tuple[int, str]:
    query = {"client_id": CLIENT_ID, "scope": "chat:write", "state": "st", **params}
    async with aiohttp.ClientSession() as session:
        url = sim.base_url + "/oauth/v2/authorize"
        async with session.get(url, params=query, allow_redirects=False) as response:
            return response.status, response.headers.get("Location", "")


def code_of(location: str) -> str:
    return location.split("code=", 1)[1].split("&", 1)[0]


async def test_authorize_redirects_with_code_and_state(sim):
    status, location = await authorize(sim)
    assert status == 302
    assert location.startswith("http://127.0.0.1:9/slack/oauth_redirect?code=")
    assert location.endswith("&state=st")


async def test_authorize_rejects_unlisted_redirect(sim):
    status, _ = await authorize(sim, redirect_uri="https://elsewhere.example.com/cb")
    assert status == 400


async def test_access_returns_workspace_token(sim):
    second = await sim.oauth.add_workspace("T0002", name="Two", bot_token="xoxb-two",
                                           bot_user_id="U0RELAY2")  # fmt: skip
    _, location = await authorize(sim, team="T0002")
    client = AsyncWebClient(base_url=sim.api_url)
    response = await client.oauth_v2_access(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, code=code_of(location)
    )
    assert response["access_token"] == second.bot_token
    assert response["team"] == {"id": "T0002", "name": "Two"}
    assert response["bot_user_id"] == "U0RELAY2"
    assert response["scope"] == "chat:write"
    assert response["authed_user"] == {"id": "U0001"}


async def test_access_code_used_once(sim):
    _, location = await authorize(sim)
    client = AsyncWebClient(base_url=sim.api_url)
    await client.oauth_v2_access(client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                                 code=code_of(location))  # fmt: skip
    with pytest.raises(SlackApiError) as caught:
        await client.oauth_v2_access(client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                                     code=code_of(location))  # fmt: skip
    assert caught.value.response["error"] == "invalid_code"


async def test_access_rejects_wrong_secret(sim):
    _, location = await authorize(sim)
    client = AsyncWebClient(base_url=sim.api_url)
    with pytest.raises(SlackApiError) as caught:
        await client.oauth_v2_access(client_id=CLIENT_ID, client_secret="wrong",
                                     code=code_of(location))  # fmt: skip
    assert caught.value.response["error"] == "bad_client_secret"


async def test_calls_routed_by_token(sim):
    await sim.oauth.add_workspace("T0002", name="Two", bot_token="xoxb-two")
    two = AsyncWebClient(token="xoxb-two", base_url=sim.api_url)
    await two.chat_postMessage(channel="C0001", text="in two")
    identity = await two.auth_test()
    assert identity["team_id"] == "T0002"
    assert sim.messages("C0001") == []
    assert [m.text for m in sim.oauth.workspaces()["T0002"].messages("C0001")] == ["in two"]


async def test_revoked_token_rejected(sim):
    sim.oauth.revoke("T0001")
    client = AsyncWebClient(token=sim.bot_token, base_url=sim.api_url)
    with pytest.raises(SlackApiError) as caught:
        await client.auth_test()
    assert caught.value.response["error"] == "token_revoked"


# The app in this process, with SLACK_REDIRECT_URI given


async def test_given_redirect_uri_sent_and_matched(sim, tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    app_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    redirect = f"{app_url}/slack/oauth_redirect"
    sim.oauth.redirect_urls = ["http://127.0.0.1:9/elsewhere", redirect]
    settings = Settings.from_env({
        **OAUTH, "SLACK_CLIENT_ID": CLIENT_ID, "SLACK_CLIENT_SECRET": CLIENT_SECRET,
        "SLACK_REDIRECT_URI": redirect, "SLACK_API_URL": sim.api_url,
        "RELAY_DATA_DIR": str(tmp_path),
    })  # fmt: skip
    runner = web.AppRunner(create_web_app(settings), access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, listener).start()
        result = await sim.oauth.install(app_url, "T0001")
    finally:
        await runner.cleanup()
        listener.close()
    exchange = next(call for call in sim.calls if call.method == "oauth.v2.access")
    landed = urlsplit(result.url)
    assert result.status == 200
    assert f"{landed.scheme}://{landed.netloc}{landed.path}" == redirect
    assert sim.oauth.exchanges == ["T0001"]
    assert exchange.params["redirect_uri"] == redirect


async def test_check_tries_no_token_in_oauth_mode(sim, tmp_path):
    out = io.StringIO()
    env = {**OAUTH, "SLACK_API_URL": sim.api_url, "RELAY_DATA_DIR": str(tmp_path)}
    code = await check(env, Report(out))
    assert code == 0
    assert "note     Slack: OAuth mode" in out.getvalue()
    assert sim.calls == []
