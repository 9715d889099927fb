"""Installations in the store, removing a workspace, and per-workspace clients and names."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.web.async_client import AsyncWebClient

from relay_plugin.config import Settings
from relay_plugin.core.pending import PendingTask, PendingTasks
from relay_plugin.core.store import BindingStore, BotBinding
from relay_plugin.slack.installations import StoreInstallations
from relay_plugin.slack.names import NameCache
from relay_plugin.slack.oauth import OAuthInstalls
from relay_plugin.tools.simulator import SlackSimulator

URL = "https://bots.example.com:9080"
TOKEN_ONE = "xoxb-one-secret"
TOKEN_TWO = "xoxb-two-secret"


def installation(team: str = "T1", token: str = TOKEN_ONE, **extra) -> Installation:
    fields = {"app_id": "A1", "team_id": team, "team_name": f"team {team}", "bot_token": token,
              "bot_id": "B1", "bot_user_id": "U0BOT", "bot_scopes": "chat:write,commands",
              "user_id": "U1", "installed_at": 1700000000.5, **extra}  # fmt: skip
    return Installation(**fields)


def pending(task_id: str, team: str) -> PendingTask:
    return PendingTask(task_id, team, "C1", "1.1", "1.2", "echo", "U1", 1.0, 2.0)


@pytest.fixture
def store(tmp_path: Path):
    with BindingStore(tmp_path / "data") as opened:
        yield opened


@pytest.fixture
def installs(store: BindingStore) -> StoreInstallations:
    return StoreInstallations(store)


async def test_save_and_find_round_trip(installs):
    await installs.async_save(installation())
    found = await installs.async_find_installation(enterprise_id=None, team_id="T1")
    assert found is not None
    assert found.bot_token == TOKEN_ONE
    assert found.bot_user_id == "U0BOT"
    assert found.bot_scopes == ["chat:write", "commands"]
    assert found.team_name == "team T1"
    assert found.user_id == "U1"
    assert found.installed_at == 1700000000.5


async def test_find_bot_of_workspace(installs):
    await installs.async_save(installation())
    bot = await installs.async_find_bot(enterprise_id=None, team_id="T1")
    missing = await installs.async_find_bot(enterprise_id=None, team_id="T2")
    assert bot is not None
    assert bot.bot_token == TOKEN_ONE
    assert bot.bot_id == "B1"
    assert missing is None


async def test_find_for_other_user_is_none(installs):
    await installs.async_save(installation())
    found = await installs.async_find_installation(enterprise_id=None, team_id="T1", user_id="U9")
    assert found is None


async def test_new_install_replaces_old(installs):
    await installs.async_save(installation(token=TOKEN_ONE))
    await installs.async_save(installation(token=TOKEN_TWO, user_id="U2"))
    found = await installs.async_find_installation(enterprise_id=None, team_id="T1")
    assert found is not None
    assert found.bot_token == TOKEN_TWO
    assert installs.count() == 1


async def test_workspaces_kept_apart(installs):
    await installs.async_save(installation("T1", TOKEN_ONE))
    await installs.async_save(installation("T2", TOKEN_TWO))
    assert installs.bot_token("T1") == TOKEN_ONE
    assert installs.bot_token("T2") == TOKEN_TWO
    assert installs.bot_token("T3") is None


async def test_org_install_keyed_by_enterprise(installs):
    org = installation(team=None, enterprise_id="E1", is_enterprise_install=True)
    await installs.async_save(org)
    found = await installs.async_find_installation(
        enterprise_id="E1", team_id="T5", is_enterprise_install=True
    )
    assert found is not None
    assert found.enterprise_id == "E1"


async def test_delete_bot_removes_bot_only_row(installs):
    await installs.async_save(installation())
    await installs.async_delete_bot(enterprise_id=None, team_id="T1")
    assert installs.count() == 0


async def test_delete_user_keeps_bot(installs):
    await installs.async_save(installation(user_token="xoxp-user", user_scopes="search:read"))
    await installs.async_delete_installation(enterprise_id=None, team_id="T1", user_id="U1")
    found = await installs.async_find_installation(enterprise_id=None, team_id="T1")
    assert found is not None
    assert found.user_token is None
    assert found.bot_token == TOKEN_ONE


async def test_delete_all(installs):
    await installs.async_save(installation())
    await installs.async_delete_all(enterprise_id=None, team_id="T1")
    assert await installs.async_find_installation(enterprise_id=None, team_id="T1") is None


async def test_save_bot_updates_token(installs):
    await installs.async_save(installation())
    rotated = Bot(team_id="T1", bot_token=TOKEN_TWO, bot_id="B1", bot_user_id="U0BOT",
                  bot_refresh_token="xoxe-refresh", bot_token_expires_at=1800000000,
                  installed_at=1700000001.0)  # fmt: skip
    await installs.async_save_bot(rotated)
    found = await installs.async_find_installation(enterprise_id=None, team_id="T1")
    assert found is not None
    assert found.bot_token == TOKEN_TWO
    assert found.bot_token_expires_at == 1800000000
    assert found.user_id == "U1"


async def test_tokens_not_logged(installs, caplog):
    caplog.set_level(logging.DEBUG, logger="relay_plugin")
    await installs.async_save(installation())
    await installs.async_delete_all(enterprise_id=None, team_id="T1")
    assert caplog.records
    assert all(TOKEN_ONE not in record.getMessage() for record in caplog.records)


async def test_store_file_private(installs, store):
    await installs.async_save(installation())
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600


async def test_delete_team_removes_only_that_team(store, installs):
    store.put_many([BotBinding("T1", "C1", "echo", URL), BotBinding("T1", "C2", "echo", URL),
                    BotBinding("T2", "C1", "echo", URL)])  # fmt: skip
    tasks = PendingTasks(store)
    await tasks.add(pending("task-1", "T1"))
    await tasks.add(pending("task-2", "T2"))
    await installs.async_save(installation("T1", TOKEN_ONE))
    await installs.async_save(installation("T2", TOKEN_TWO))
    removed = store.delete_team("T1")
    assert removed == {"bindings": 2, "pending_tasks": 1, "installations": 1}
    assert [b.team_id for b in store.all()] == ["T2"]
    assert await tasks.get("task-1") is None
    assert await tasks.get("task-2") is not None
    assert installs.bot_token("T1") is None
    assert installs.bot_token("T2") == TOKEN_TWO


def test_version_two_file_migrates_to_installations(tmp_path):
    class _StoreV2(BindingStore):
        SCHEMA_VERSION = 2
        MIGRATIONS = BindingStore.MIGRATIONS[:2]

    with _StoreV2(tmp_path) as old:
        old.put(BotBinding("T1", "C1", "echo", URL))
    with BindingStore(tmp_path) as store:
        kept = store.get("T1", "C1", "echo")
        tables = [row[0] for row in store.read("SELECT name FROM sqlite_master", ())]
    assert kept is not None
    assert "installations" in tables


# Per-workspace clients and names, against the simulator with a second workspace


@pytest.fixture
async def sim() -> AsyncIterator[SlackSimulator]:
    async with SlackSimulator(bot_token=TOKEN_ONE) as simulator:
        await simulator.oauth.add_workspace("T0002", name="Two", bot_token=TOKEN_TWO,
                                            bot_user_id="U0RELAY2")  # fmt: skip
        yield simulator


def oauth_installs(sim: SlackSimulator, store: BindingStore) -> OAuthInstalls:
    settings = Settings.from_env({
        "SLACK_CLIENT_ID": sim.oauth.client_id, "SLACK_CLIENT_SECRET": sim.oauth.client_secret,
        "SLACK_STATE_SECRET": "s" * 32, "SLACK_SIGNING_SECRET": "x", "SLACK_API_URL": sim.api_url,
        "RELAY_DATA_DIR": str(store.path.parent),
    })  # fmt: skip
    return OAuthInstalls(settings, store, AsyncWebClient(base_url=sim.api_url))


async def test_client_for_uses_workspace_token(sim, store):
    oauth = oauth_installs(sim, store)
    await oauth.installations.async_save(installation("T0001", TOKEN_ONE))
    await oauth.installations.async_save(installation("T0002", TOKEN_TWO))
    first = await oauth.client_for("T0001").auth_test()
    second = await oauth.client_for("T0002").auth_test()
    assert first["team_id"] == "T0001"
    assert second["team_id"] == "T0002"
    assert second["user_id"] == "U0RELAY2"


async def test_client_for_uninstalled_fails(sim, store):
    oauth = oauth_installs(sim, store)
    with pytest.raises(SlackApiError) as caught:
        await oauth.client_for("T0002").auth_test()
    assert caught.value.response["error"] == "not_authed"


async def test_names_cached_per_workspace(sim):
    second = sim.oauth.workspaces()["T0002"]
    second.users["U0001"]["profile"]["display_name"] = "alice-in-two"
    names = NameCache()
    one = AsyncWebClient(token=TOKEN_ONE, base_url=sim.api_url)
    two = AsyncWebClient(token=TOKEN_TWO, base_url=sim.api_url)
    in_one = await names.users(one, "T0001", {"U0001"})
    in_two = await names.users(two, "T0002", {"U0001"})
    assert in_one == {"U0001": "alice"}
    assert in_two == {"U0001": "alice-in-two"}
