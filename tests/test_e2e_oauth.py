"""OAuth installs into two workspaces, end to end through the real app process."""

import json
import os
import subprocess
import sys

import aiohttp
import pytest

from oauth_harness import TEAMS, UNUSED_BOT_TOKEN, running_oauth_stack
from relay_plugin.core.store import BindingStore
from relay_plugin.slack.installations import StoreInstallations
from relay_plugin.slack.oauth import BOT_SCOPES


@pytest.fixture
async def stack(tmp_path):
    async with running_oauth_stack(tmp_path / "data") as running:
        yield running


@pytest.fixture
async def installed(stack):
    await stack.install_all()
    for team in stack.teams.values():
        await team.command(f"bind echo {stack.agent_url}")
    yield stack


def stored(stack):
    """Return the workspaces with an installation and with bindings, read from the store file."""
    with BindingStore(stack.teams["T0001"].data_dir) as store:
        installs = {team for team in TEAMS if StoreInstallations(store).bot_token(team)}
        bound = {binding.team_id for binding in store.all()}
    return installs, bound


def relayed_teams(stack):
    return [json.loads(json.loads(r.body)["metadata"])["team"] for r in stack.agent.received]


async def test_install_exchanges_code_per_workspace(stack):
    first = await stack.install("T0001")
    second = await stack.install("T0002")
    installs, _ = stored(stack)
    assert first.status == 200
    assert second.status == 200
    assert "slack://app?team=T0002" in second.text
    assert stack.sim.oauth.exchanges == ["T0001", "T0002"]
    assert installs == {"T0001", "T0002"}


async def test_install_asks_for_manifest_scopes(stack):
    await stack.install("T0001")
    line = await stack.app.wait_for_log("saved the installation in workspace T0001")
    assert f"scopes {','.join(BOT_SCOPES)}, installed by U0001" in line


async def test_redirect_without_state_cookie_rejected(stack):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stack.url}/slack/install", allow_redirects=False) as install:
            authorize_url = install.headers["Location"]
        state = authorize_url.split("state=", 1)[1].split("&", 1)[0]
        # A fresh session has no state cookie: another browser than the one that started.
        async with aiohttp.ClientSession() as other:
            redirect = f"{stack.url}/slack/oauth_redirect?code=1.forged&state={state}"
            async with other.get(redirect) as response:
                status = response.status
    assert status == 400
    assert stack.sim.oauth.exchanges == []


async def test_bindings_isolated_per_workspace(stack):
    await stack.install_all()
    first, second = stack.teams["T0001"], stack.teams["T0002"]
    bound = await first.command(f"bind echo {stack.agent_url}")
    other = await second.command("list")
    same = await first.command("list")
    assert bound.startswith("Bound *echo*")
    assert other.startswith("No bots are bound in this channel")
    assert "• *echo*" in same


async def test_mentions_answer_in_own_workspace(installed):
    first, second = installed.teams["T0001"], installed.teams["T0002"]
    event_one = await first.mention("echo from one")
    event_two = await second.mention("echo from two")
    replies_one = await first.final_replies("C0001", event_one["ts"])
    replies_two = await second.final_replies("C0001", event_two["ts"])
    assert sorted(relayed_teams(installed)) == ["T0001", "T0002"]
    assert replies_one[0].blocks[0]["text"] == "echo: from one"
    assert replies_two[0].blocks[0]["text"] == "echo: from two"
    assert first.sim.thread("C0001", event_two["ts"]) == []
    assert second.sim.thread("C0001", event_one["ts"]) == []
    assert "chat.postMessage" in installed.calls_with_token(TEAMS["T0002"]["bot_token"])
    assert installed.calls_with_token(UNUSED_BOT_TOKEN) == []


async def test_app_uninstalled_forgets_workspace(installed):
    first, second = installed.teams["T0001"], installed.teams["T0002"]
    installed.sim.oauth.revoke("T0002")
    status = await second.slack.send_event({"type": "app_uninstalled"})
    await installed.app.wait_for_log("workspace T0002: the app was uninstalled")
    installs, bound = stored(installed)
    event = await first.mention("echo still here")
    replies = await first.final_replies("C0001", event["ts"])
    assert status == 200
    assert installs == {"T0001"}
    assert bound == {"T0001"}
    assert replies[0].blocks[0]["text"] == "echo: still here"


async def test_tokens_revoked_forgets_workspace(installed):
    first, second = installed.teams["T0001"], installed.teams["T0002"]
    installed.sim.oauth.revoke("T0002")
    revoked = {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": ["U0RELAY2"]}}
    status = await second.slack.send_event(revoked)
    await installed.app.wait_for_log("workspace T0002: its bot token was revoked")
    installs, bound = stored(installed)
    listed = await first.command("list")
    assert status == 200
    assert installs == {"T0001"}
    assert bound == {"T0001"}
    assert "• *echo*" in listed


async def test_reinstall_after_uninstall_starts_empty(installed):
    second = installed.teams["T0002"]
    installed.sim.oauth.revoke("T0002")
    await second.slack.send_event({"type": "app_uninstalled"})
    await installed.app.wait_for_log("workspace T0002: the app was uninstalled")
    again = await installed.install("T0002")
    listed = await second.command("list")
    assert again.status == 200
    assert second.sim.bot_token != TEAMS["T0002"]["bot_token"]
    assert listed.startswith("No bots are bound in this channel")


def run_serve(env_overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "RELAY_"))}
    env.update(SLACK_SIGNING_SECRET="s", RELAY_DATA_DIR=env_overrides.pop("data_dir"),
               HOST="127.0.0.1", PORT="0", **env_overrides)  # fmt: skip
    return subprocess.run([sys.executable, "-m", "relay_plugin", "serve"], capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip


@pytest.mark.parametrize(
    ("given", "missing"),
    [({"SLACK_CLIENT_ID": "1.2"}, "SLACK_CLIENT_SECRET"),
     ({"SLACK_CLIENT_ID": "1.2", "SLACK_CLIENT_SECRET": "c"}, "SLACK_STATE_SECRET"),
     ({"SLACK_CLIENT_SECRET": "c", "SLACK_STATE_SECRET": "x" * 32}, "SLACK_CLIENT_ID")],
    ids=["only-id", "no-state-secret", "no-id"],
)  # fmt: skip
def test_partial_oauth_settings_stop_start(tmp_path, given, missing):
    result = run_serve({"data_dir": str(tmp_path), **given})
    assert result.returncode == 2
    assert f"configuration error: {missing}: missing" in result.stderr
    assert "listening on" not in result.stderr
