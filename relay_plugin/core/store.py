"""Durable store of bot bindings, seen Slack events and more: one SQLite file in the data folder.

Every write is a short ``BEGIN IMMEDIATE`` transaction with ``synchronous=FULL`` in WAL mode, so a
returned ``put`` survives a killed process, and two processes sharing the folder wait for each
other (``busy_timeout``) instead of overwriting each other's changes.

A file that is not a store this program can read is never replaced or modified: opening it raises
StoreCorruptError or StoreVersionError (see ``store_file``).
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from relay_plugin.core.endpoints import validate_bot_name, validate_url
from relay_plugin.core.protocol import format_time, parse_time
from relay_plugin.core.store_file import (
    APPLICATION_ID,
    BUSY_TIMEOUT_S,
    check_existing,
    create_private_file,
    newer_version_error,
    prepare_folder,
    restrict_modes,
    store_error,
)
from relay_plugin.core.store_schema import MIGRATIONS as SCHEMA_MIGRATIONS, Migration
from relay_plugin.errors import InvalidBindingError, StoreError

logger = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 60.0
ID_MAX = 64
_PAGE_ROWS = 500

_COLUMNS = "team_id, channel_id, bot, url, token, dedupe, created_by, created_at"
_GET_SQL = f"SELECT {_COLUMNS} FROM bindings WHERE team_id = ? AND channel_id = ? AND bot = ?"
_CHANNEL_SQL = f"SELECT {_COLUMNS} FROM bindings WHERE team_id = ? AND channel_id = ? ORDER BY bot"
_ALL_FIRST_SQL = f"SELECT {_COLUMNS} FROM bindings ORDER BY team_id, channel_id, bot LIMIT ?"
_ALL_NEXT_SQL = (
    f"SELECT {_COLUMNS} FROM bindings WHERE (team_id, channel_id, bot) > (?, ?, ?) "
    "ORDER BY team_id, channel_id, bot LIMIT ?"
)
_PUT_SQL = f"INSERT OR REPLACE INTO bindings ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_REMOVE_SQL = "DELETE FROM bindings WHERE team_id = ? AND channel_id = ? AND bot = ?"
_SEEN_SQL = "SELECT expires_at FROM seen_events WHERE key = ?"
_CLAIM_SQL = "INSERT OR REPLACE INTO seen_events (key, expires_at) VALUES (?, ?)"
_PRUNE_SQL = "DELETE FROM seen_events WHERE expires_at <= ?"
# Tables with a row per workspace, which delete_team() empties for one workspace.
_TEAM_TABLES = ("bindings", "pending_tasks", "installations")


@dataclass(frozen=True, slots=True)
class BotBinding:
    """One bot bound in one Slack channel. The token is kept out of ``repr``."""

    team_id: str
    channel_id: str
    bot: str
    url: str
    token: str = field(default="", repr=False)
    dedupe: bool = False
    created_by: str = ""
    created_at: datetime | None = None


_SLACK_ID = re.compile(r"^[A-Z0-9]+$")


def validate_binding(binding: BotBinding) -> BotBinding:
    """Return ``binding`` with its URL stripped, or raise InvalidBindingError naming the field."""
    _validate_id("team id", binding.team_id, "the Slack workspace id, e.g. T0123ABCD")
    if binding.channel_id.startswith("#"):
        raise InvalidBindingError(
            "channel id", binding.channel_id, "give the channel id (C...), not the channel name"
        )
    _validate_id("channel id", binding.channel_id, "the Slack channel id, e.g. C0123ABCD")
    validate_bot_name(binding.bot)
    url = validate_url(binding.url)
    if any(ch.isspace() or not ch.isprintable() for ch in binding.token):
        # The token is not shown, because error messages end up in logs.
        raise InvalidBindingError(
            "token", "(hidden)", "it contains white space or control characters"
        )
    return replace(binding, url=url)


def _validate_id(name: str, value: str, hint: str) -> None:
    if not value:
        raise InvalidBindingError(name, value, f"it is empty; give {hint}")
    if len(value) > ID_MAX:
        raise InvalidBindingError(name, value, f"it is longer than {ID_MAX} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise InvalidBindingError(name, value, f"it contains white space; give {hint}")
    if not _SLACK_ID.match(value):
        raise InvalidBindingError(
            name, value, f"Slack ids are upper-case letters and digits; give {hint}"
        )


class BindingStore:
    """Bot bindings keyed by (team, channel, bot), plus a durable set of seen event keys.

    Thread-safe, so methods may run in ``asyncio.to_thread``. Writes go through one connection
    and reads through a second, each behind its own lock: in WAL mode a read sees the last
    commit without waiting for a writer's fsync.
    """

    SCHEMA_VERSION: ClassVar[int] = 3
    FILE_NAME: ClassVar[str] = "relay.db"
    # MIGRATIONS[v] upgrades a file at schema version v to v + 1, inside one write transaction.
    MIGRATIONS: ClassVar[tuple[Migration, ...]] = SCHEMA_MIGRATIONS

    def __init__(self, data_dir: Path, *, prune_interval_s: float = PRUNE_INTERVAL_S) -> None:
        self._dir = Path(data_dir)
        self._path = self._dir / self.FILE_NAME
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._prune_interval_s = prune_interval_s
        self._next_prune = 0.0
        prepare_folder(self._dir)
        if create_private_file(self._path):
            logger.info("created binding store %s", self._path)
        else:
            check_existing(self._path, self.SCHEMA_VERSION)
        self._conn: sqlite3.Connection | None = self._connect()
        self._read_conn: sqlite3.Connection | None = self._connect()

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def __enter__(self) -> BindingStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection. Closing twice is allowed."""
        with self._read_lock:
            if self._read_conn is not None:
                self._read_conn.close()
                self._read_conn = None
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def put(self, binding: BotBinding) -> BotBinding:
        """Insert or replace a binding and return the stored row (with ``created_at`` set)."""
        return self.put_many([binding])[0]

    def put_many(self, bindings: Iterable[BotBinding]) -> list[BotBinding]:
        """Insert or replace several bindings in one transaction: all are stored or none."""
        now = datetime.now(timezone.utc)
        stored = [replace(validate_binding(b), created_at=now) for b in bindings]
        with self._write("put") as conn:
            for binding in stored:
                _reject_case_twin(conn, binding)
                conn.execute(_PUT_SQL, _to_row(binding))
        return stored

    def remove(self, team_id: str, channel_id: str, bot: str) -> bool:
        """Delete a binding and return whether it existed."""
        with self._write("remove") as conn:
            cursor = conn.execute(_REMOVE_SQL, (team_id, channel_id, bot))
        return cursor.rowcount > 0

    def get(self, team_id: str, channel_id: str, bot: str) -> BotBinding | None:
        """Return one binding, or None when the bot is not bound in that channel."""
        rows = self._read(_GET_SQL, (team_id, channel_id, bot))
        return _from_row(rows[0]) if rows else None

    def channel(self, team_id: str, channel_id: str) -> list[BotBinding]:
        """Return the bindings of one channel, sorted by bot name."""
        return [_from_row(row) for row in self._read(_CHANNEL_SQL, (team_id, channel_id))]

    def all(self) -> Iterator[BotBinding]:
        """Yield every binding ordered by team, channel and bot, reading a page at a time."""
        rows = self._read(_ALL_FIRST_SQL, (_PAGE_ROWS,))
        while rows:
            yield from (_from_row(row) for row in rows)
            if len(rows) < _PAGE_ROWS:
                return
            rows = self._read(_ALL_NEXT_SQL, (*rows[-1][:3], _PAGE_ROWS))

    def count(self) -> int:
        """Return the number of bindings."""
        return int(self._read("SELECT COUNT(*) FROM bindings", ())[0][0])

    def delete_team(self, team_id: str) -> dict[str, int]:
        """Delete a workspace's bindings, pending tasks and installation in one transaction.

        Returns the number of rows deleted from each table. Seen event keys stay until they expire.
        """
        with self._write("delete workspace") as conn:
            return {
                table: conn.execute(f"DELETE FROM {table} WHERE team_id = ?", (team_id,)).rowcount
                for table in _TEAM_TABLES
            }

    def claim_event(self, key: str, ttl_s: float) -> bool:
        """Record ``key`` as seen for ``ttl_s`` seconds, or return False if it is already seen.

        Expired keys are deleted at most once per ``prune_interval_s`` through the expiry index.
        Expiry uses the wall clock, so it holds across restarts.
        """
        return self.claim_events([key], ttl_s)

    def claim_events(self, keys: list[str], ttl_s: float) -> bool:
        """Claim several keys in one transaction: all when none is seen yet, else none.

        Returns False, and records nothing, when any key is already seen.
        """
        if not keys or not all(keys):
            raise ValueError("claim_events needs non-empty keys")
        if not math.isfinite(ttl_s) or ttl_s < 0:
            raise ValueError(f"ttl_s must be a finite number >= 0, not {ttl_s!r}")
        now = time.time()
        with self._write("claim event") as conn:
            for key in keys:
                row = conn.execute(_SEEN_SQL, (key,)).fetchone()
                if row is not None and row[0] > now:
                    return False
            if now >= self._next_prune:
                pruned = conn.execute(_PRUNE_SQL, (now,)).rowcount
                self._next_prune = now + self._prune_interval_s
                logger.debug("pruned %d expired event keys", pruned)
            for key in keys:
                conn.execute(_CLAIM_SQL, (key, now + ttl_s))
        return True

    # Opening

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise store_error(self._path, "open", exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA synchronous = FULL")
            self._migrate(conn)
            # Set after the version check so that a newer file is not touched. WAL is persistent.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            conn.close()
            raise store_error(self._path, "open", exc) from exc
        except BaseException:
            conn.close()
            raise
        restrict_modes(self._path)
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > self.SCHEMA_VERSION:
                raise newer_version_error(self._path, version, self.SCHEMA_VERSION)
            for step in range(version, self.SCHEMA_VERSION):
                self.MIGRATIONS[step](conn)
                logger.info("migrated %s from schema %d to %d", self._path, step, step + 1)
            if version < self.SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {int(self.SCHEMA_VERSION)}")
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # Transactions

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(str(self._path), "the store is closed; open a new BindingStore")
        return self._conn

    @contextmanager
    def write(self, action: str) -> Iterator[sqlite3.Connection]:
        """Run a write transaction; for modules that keep their own tables in this file."""
        with self._write(action) as conn:
            yield conn

    def read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """Run one query; for modules that keep their own tables in this file."""
        return self._read(sql, params)

    @contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise store_error(self._path, action, exc) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise store_error(self._path, action, exc) from exc
                raise

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._read_lock:
            conn = self._read_conn
            if conn is None:
                raise StoreError(str(self._path), "the store is closed; open a new BindingStore")
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise store_error(self._path, "read", exc) from exc


def _reject_case_twin(conn: sqlite3.Connection, binding: BotBinding) -> None:
    """Raise InvalidBindingError when the channel has a bot whose name differs only in case.

    Mentions match bot names without case, so two such bots could not be told apart.
    """
    row = conn.execute(
        "SELECT bot FROM bindings WHERE team_id = ? AND channel_id = ? AND bot = ? COLLATE NOCASE"
        " AND bot != ?",
        (binding.team_id, binding.channel_id, binding.bot, binding.bot),
    ).fetchone()
    if row is not None:
        raise InvalidBindingError(
            "bot name", binding.bot,
            f"{row[0]!r} is already bound in this channel, and names that differ only in case "
            "would be confused in mentions; remove it first or pick another name",
        )  # fmt: skip


def _to_row(binding: BotBinding) -> tuple[Any, ...]:
    assert binding.created_at is not None
    return (
        binding.team_id,
        binding.channel_id,
        binding.bot,
        binding.url,
        binding.token,
        int(binding.dedupe),
        binding.created_by,
        format_time(binding.created_at),
    )


def _from_row(row: tuple[Any, ...]) -> BotBinding:
    team_id, channel_id, bot, url, token, dedupe, created_by, created_at = row
    return BotBinding(
        team_id=team_id,
        channel_id=channel_id,
        bot=bot,
        url=url,
        token=token,
        dedupe=bool(dedupe),
        created_by=created_by,
        created_at=parse_time(created_at),
    )
