"""The store's SQLite schema: one migration per version, each run inside one write transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]


def _create_schema_v1(conn: sqlite3.Connection) -> None:
    # The primary keys are the lookup indexes, so get() and channel() search them, never scan.
    conn.execute(
        "CREATE TABLE bindings ("
        " team_id TEXT NOT NULL, channel_id TEXT NOT NULL, bot TEXT NOT NULL,"
        " url TEXT NOT NULL, token TEXT NOT NULL DEFAULT '', dedupe INTEGER NOT NULL DEFAULT 0,"
        " created_by TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL,"
        " PRIMARY KEY (team_id, channel_id, bot)) WITHOUT ROWID"
    )
    conn.execute(
        "CREATE TABLE seen_events (key TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID"
    )
    conn.execute("CREATE INDEX seen_events_expiry ON seen_events (expires_at)")


def _create_pending_tasks_v2(conn: sqlite3.Connection) -> None:
    # Relays whose remote answered 202 and reports later through the callback endpoint.
    conn.execute(
        "CREATE TABLE pending_tasks ("
        " task_id TEXT PRIMARY KEY, team_id TEXT NOT NULL, channel_id TEXT NOT NULL,"
        " thread_ts TEXT NOT NULL, working_ts TEXT NOT NULL, bot TEXT NOT NULL,"
        " user_id TEXT NOT NULL, started_at REAL NOT NULL, expires_at REAL NOT NULL)"
        " WITHOUT ROWID"
    )
    conn.execute("CREATE INDEX pending_tasks_expiry ON pending_tasks (expires_at)")


def _create_installations_v3(conn: sqlite3.Connection) -> None:
    # OAuth installations, one row per workspace. ``installation`` is a JSON object that contains
    # the bot token, so the table lives only in this 0600 file. enterprise_id is '' outside
    # Enterprise Grid.
    conn.execute(
        "CREATE TABLE installations ("
        " team_id TEXT NOT NULL, enterprise_id TEXT NOT NULL, installation TEXT NOT NULL,"
        " installed_at REAL NOT NULL, PRIMARY KEY (team_id, enterprise_id)) WITHOUT ROWID"
    )


# MIGRATIONS[v] upgrades a file at schema version v to v + 1.
MIGRATIONS: tuple[Migration, ...] = (
    _create_schema_v1,
    _create_pending_tasks_v2,
    _create_installations_v3,
)
