"""The app's installations, one per workspace, in the ``installations`` table of the store.

Bolt saves an installation when a workspace completes the OAuth flow, and looks it up for
every request from that workspace. Each row contains the installation as a JSON object, bot
token included, so tokens live only in the store's 0600 file. Log lines name workspaces,
users and scopes, never a token.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore

from relay_plugin.core.store import BindingStore

log = logging.getLogger(__name__)

# Installation's constructor arguments that are stored. The *_expires_in arguments are left
# out, because the *_expires_at values derived from them are stored instead.
_FIELDS = (
    "app_id", "enterprise_id", "enterprise_name", "enterprise_url", "team_id", "team_name",
    "bot_token", "bot_id", "bot_user_id", "bot_refresh_token", "bot_token_expires_at",
    "user_id", "user_token", "user_refresh_token", "user_token_expires_at",
    "incoming_webhook_url", "incoming_webhook_channel", "incoming_webhook_channel_id",
    "incoming_webhook_configuration_url", "is_enterprise_install", "token_type", "installed_at",
)  # fmt: skip
_BOT_FIELDS = ("bot_token", "bot_id", "bot_user_id", "bot_scopes", "bot_refresh_token",
               "bot_token_expires_at")  # fmt: skip
_USER_FIELDS = ("user_token", "user_scopes", "user_refresh_token", "user_token_expires_at")
_FIND_SQL = "SELECT installation FROM installations WHERE team_id = ? AND enterprise_id = ?"
_SAVE_SQL = (
    "INSERT OR REPLACE INTO installations (team_id, enterprise_id, installation, installed_at) "
    "VALUES (?, ?, ?, ?)"
)
_DELETE_SQL = "DELETE FROM installations WHERE team_id = ? AND enterprise_id = ?"


class StoreInstallations(AsyncInstallationStore):
    """slack_sdk's AsyncInstallationStore on the store's ``installations`` table.

    A workspace has one row: a new installation replaces the one before, whoever installed it.
    Every method runs its SQL in a worker thread, except ``bot_token``, an indexed read.
    """

    def __init__(self, store: BindingStore) -> None:
        self._store = store

    @property
    def logger(self) -> logging.Logger:
        """The logger that slack_sdk's interface requires."""
        return log

    async def async_save(self, installation: Installation) -> None:
        """Store the installation of a workspace, replacing the one before."""
        await asyncio.to_thread(self._save, installation)
        log.info("saved the installation in workspace %s (%s): bot user %s, scopes %s, "
                 "installed by %s", installation.team_id, installation.team_name,
                 installation.bot_user_id, ",".join(installation.bot_scopes or []),
                 installation.user_id)  # fmt: skip

    async def async_save_bot(self, bot: Bot) -> None:
        """Store a bot's token, as token rotation does, keeping the rest of the installation."""
        team, enterprise = _key(bot.enterprise_id, bot.team_id, bot.is_enterprise_install)
        installation = await asyncio.to_thread(self._find, team, enterprise)
        if installation is None:
            installation = Installation(
                app_id=bot.app_id, enterprise_id=bot.enterprise_id,
                enterprise_name=bot.enterprise_name, team_id=bot.team_id, team_name=bot.team_name,
                user_id="", is_enterprise_install=bot.is_enterprise_install,
            )  # fmt: skip
        for name in _BOT_FIELDS:
            setattr(installation, name, getattr(bot, name))
        await asyncio.to_thread(self._save, installation)

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        """Return the workspace's bot, or None when the app is not installed there."""
        key = _key(enterprise_id, team_id, is_enterprise_install)
        installation = await asyncio.to_thread(self._find, *key)
        if installation is None or not installation.bot_token:
            return None
        return installation.to_bot()

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        """Return the workspace's installation; with ``user_id``, only if that user installed it."""
        key = _key(enterprise_id, team_id, is_enterprise_install)
        installation = await asyncio.to_thread(self._find, *key)
        if installation is None or (user_id is not None and installation.user_id != user_id):
            return None
        return installation

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        """Forget the bot token, and delete the row unless it still has a user token."""
        await asyncio.to_thread(self._clear, _key(enterprise_id, team_id, False), _BOT_FIELDS)

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        """Delete the installation; with ``user_id``, forget only that installer's user token."""
        key = _key(enterprise_id, team_id, False)
        if user_id is None:
            await asyncio.to_thread(self._delete, key)
            return
        installation = await asyncio.to_thread(self._find, *key)
        if installation is not None and installation.user_id == user_id:
            await asyncio.to_thread(self._clear, key, _USER_FIELDS)

    async def async_delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        """Delete everything stored for the workspace's installation."""
        await asyncio.to_thread(self._delete, _key(enterprise_id, team_id, False))

    def bot_token(self, team_id: str) -> str | None:
        """Return the bot token of a workspace outside Enterprise Grid, or None."""
        installation = self._find(team_id, "")
        return installation.bot_token if installation is not None else None

    def count(self) -> int:
        """Return the number of installations."""
        return int(self._store.read("SELECT COUNT(*) FROM installations", ())[0][0])

    def _find(self, team: str, enterprise: str) -> Installation | None:
        rows = self._store.read(_FIND_SQL, (team, enterprise))
        if not rows:
            return None
        try:
            return Installation(**json.loads(rows[0][0]))
        except (ValueError, TypeError) as exc:
            log.error("the stored installation in workspace %s cannot be read (%s); install "
                      "the app in that workspace again", team or enterprise,
                      type(exc).__name__)  # fmt: skip
            return None

    def _save(self, installation: Installation) -> None:
        team, enterprise = _key(
            installation.enterprise_id, installation.team_id, installation.is_enterprise_install
        )
        with self._store.write("save installation") as conn:
            conn.execute(_SAVE_SQL, (team, enterprise, _to_json(installation),
                                     installation.installed_at))  # fmt: skip

    def _delete(self, key: tuple[str, str]) -> None:
        with self._store.write("delete installation") as conn:
            deleted = conn.execute(_DELETE_SQL, key).rowcount
        if deleted:
            log.info("deleted the installation in workspace %s", key[0] or key[1])

    def _clear(self, key: tuple[str, str], fields: tuple[str, ...]) -> None:
        installation = self._find(*key)
        if installation is None:
            return
        for name in fields:
            setattr(installation, name, None)
        if installation.bot_token or installation.user_token:
            self._save(installation)
        else:
            self._delete(key)


def _key(
    enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None
) -> tuple[str, str]:
    """Return the row key (team_id, enterprise_id); an org-wide installation has team_id ''."""
    return ("" if is_enterprise_install else team_id or ""), enterprise_id or ""


def _to_json(installation: Installation) -> str:
    data: dict[str, Any] = {name: getattr(installation, name) for name in _FIELDS}
    data["bot_scopes"] = ",".join(installation.bot_scopes or [])
    data["user_scopes"] = ",".join(installation.user_scopes or [])
    data["custom_values"] = installation.custom_values
    return json.dumps(data)
