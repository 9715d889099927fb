"""Tests of the SQLite binding store."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import stat
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from relay_plugin.core.store import _CHANNEL_SQL, _GET_SQL, _PRUNE_SQL, BindingStore, BotBinding
from relay_plugin.core.store_file import APPLICATION_ID
from relay_plugin.errors import (
    InvalidBindingError,
    StoreCorruptError,
    StoreError,
    StoreVersionError,
)

WRITER = Path(__file__).with_name("store_writer.py")
ROOT = Path(__file__).resolve().parents[1]
URL = "https://bots.example.com:9080"


def _binding(
    bot: str = "security-bot", channel: str = "C1", team: str = "T1", **extra
) -> BotBinding:
    return BotBinding(team, channel, bot, extra.pop("url", URL), **extra)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), os.stat(path).st_mtime_ns


def _vm_steps(path: Path, sql: str, params: tuple[str, ...]) -> int:
    """Count the SQLite virtual machine steps of one query: a measure of cost without timing."""
    conn = sqlite3.connect(path)
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(tick, 1)
    conn.execute(sql, params).fetchall()
    conn.close()
    return steps


def _writer(data_dir: Path, prefix: str, count: int, max_s: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(data_dir), prefix, str(count), str(max_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


@pytest.fixture
def store(tmp_path: Path):
    with BindingStore(tmp_path / "data") as opened:
        yield opened


# Basic operations


def test_put_returns_stored_row(store: BindingStore) -> None:
    stored = store.put(_binding(token="s3cret", dedupe=True, created_by="U1"))
    assert stored == store.get("T1", "C1", "security-bot")
    assert stored.created_at is not None
    assert stored.created_at.tzinfo == timezone.utc


def test_put_keeps_fields(store: BindingStore) -> None:
    store.put(_binding(token="s3cret", dedupe=True, created_by="U1"))
    got = store.get("T1", "C1", "security-bot")
    assert got is not None
    assert got.token == "s3cret"
    assert got.dedupe is True
    assert got.created_by == "U1"
    assert got.url == URL


def test_put_replaces_same_key(store: BindingStore) -> None:
    store.put(_binding(url="https://old.example.com"))
    store.put(_binding(url="https://new.example.com"))
    assert store.count() == 1
    assert store.get("T1", "C1", "security-bot").url == "https://new.example.com"


def test_put_strips_url(store: BindingStore) -> None:
    assert store.put(_binding(url=f"  {URL} ")).url == URL


def test_bot_unique_per_channel_and_team(store: BindingStore) -> None:
    store.put(_binding(channel="C1", url="https://one.example.com"))
    store.put(_binding(channel="C2", url="https://two.example.com"))
    store.put(_binding(team="T2", channel="C1", url="https://three.example.com"))
    assert store.count() == 3
    assert store.get("T1", "C2", "security-bot").url == "https://two.example.com"
    assert store.get("T2", "C1", "security-bot").url == "https://three.example.com"


@pytest.mark.parametrize(
    ("field", "binding"),
    [
        ("bot name", _binding(bot="")),
        ("bot name", _binding(bot="has space")),
        ("bot name", _binding(bot="x" * 65)),
        ("URL", _binding(url="ftp://bots.example.com")),
        ("URL", _binding(url="https://")),
        ("URL", _binding(url="")),
        ("team id", _binding(team="")),
        ("channel id", _binding(channel="")),
        ("channel id", _binding(channel="#general")),
        ("channel id", _binding(channel="C1 ")),
        ("token", _binding(token="abc\ndef")),
    ],
    ids=[
        "empty_bot", "bot_space", "bot_long", "ftp_url", "no_host", "empty_url",
        "empty_team", "empty_channel", "channel_name", "channel_space", "token_newline",
    ],
)
def test_put_rejects_invalid(store: BindingStore, field: str, binding: BotBinding) -> None:
    with pytest.raises(InvalidBindingError) as caught:
        store.put(binding)
    assert caught.value.field == field
    assert store.count() == 0


def test_invalid_token_not_shown(store: BindingStore) -> None:
    with pytest.raises(InvalidBindingError) as caught:
        store.put(_binding(token="top secret"))
    assert "top secret" not in str(caught.value)


def test_repr_hides_token() -> None:
    assert "s3cret" not in repr(_binding(token="s3cret"))


def test_put_many_all_or_nothing(store: BindingStore) -> None:
    with pytest.raises(InvalidBindingError):
        store.put_many([_binding(bot="good"), _binding(bot="bad name")])
    assert store.count() == 0


def test_remove(store: BindingStore) -> None:
    store.put(_binding())
    assert store.remove("T1", "C1", "security-bot") is True
    assert store.get("T1", "C1", "security-bot") is None
    assert store.remove("T1", "C1", "security-bot") is False


def test_channel_sorted_and_scoped(store: BindingStore) -> None:
    for bot in ("zeta", "alpha", "mid"):
        store.put(_binding(bot=bot))
    store.put(_binding(bot="other", channel="C2"))
    store.put(_binding(bot="elsewhere", team="T2"))
    assert [b.bot for b in store.channel("T1", "C1")] == ["alpha", "mid", "zeta"]


def test_all_ordered_across_pages(store: BindingStore) -> None:
    wanted = [_binding(bot=f"b{i}", channel=f"C{i % 7}", team=f"T{i % 3}") for i in range(1203)]
    store.put_many(reversed(wanted))
    keys = [(b.team_id, b.channel_id, b.bot) for b in store.all()]
    assert keys == sorted((b.team_id, b.channel_id, b.bot) for b in wanted)
    assert store.count() == 1203


def test_closed_store_raises(tmp_path: Path) -> None:
    store = BindingStore(tmp_path)
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get("T1", "C1", "security-bot")


def test_path_in_data_dir(tmp_path: Path) -> None:
    with BindingStore(tmp_path) as store:
        assert store.path == tmp_path / "relay.db"


# Lookups use the primary key


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two stores with the same 10 bindings in T5/C5; the big one has 99,990 more elsewhere."""
    target = [_binding(bot=f"bot{i}", team="T5", channel="C5") for i in range(10)]
    small_dir = tmp_path_factory.mktemp("small")
    big_dir = tmp_path_factory.mktemp("big")
    with BindingStore(small_dir) as small:
        small.put_many(target)
    others = (
        _binding(bot=f"bot{i}", team=f"T{i % 10}", channel=f"C{i // 10 % 1000}")
        for i in range(100_000)
    )
    with BindingStore(big_dir) as big:
        big.put_many(target)
        big.put_many(b for b in others if (b.team_id, b.channel_id) != ("T5", "C5"))
        assert big.count() == 100_000
    return small_dir / "relay.db", big_dir / "relay.db"


@pytest.mark.parametrize(
    ("sql", "params"),
    [(_GET_SQL, ("T5", "C5", "bot3")), (_CHANNEL_SQL, ("T5", "C5"))],
    ids=["get", "channel"],
)
def test_lookup_searches_primary_key(big_store, sql: str, params: tuple[str, ...]) -> None:
    conn = sqlite3.connect(big_store[1])
    plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    conn.close()
    assert "SEARCH bindings USING PRIMARY KEY" in plan
    assert "SCAN" not in plan
    assert "TEMP B-TREE" not in plan


@pytest.mark.parametrize(
    ("sql", "params"),
    [(_GET_SQL, ("T5", "C5", "bot3")), (_CHANNEL_SQL, ("T5", "C5"))],
    ids=["get", "channel"],
)
def test_lookup_cost_independent_of_size(big_store, sql: str, params: tuple[str, ...]) -> None:
    small_path, big_path = big_store
    # A scan of the big store would take millions of steps; a key search a few more at most.
    assert _vm_steps(big_path, sql, params) <= _vm_steps(small_path, sql, params) + 5


def test_big_store_lookup_results(big_store) -> None:
    with BindingStore(big_store[1].parent) as store:
        assert len(store.channel("T5", "C5")) == 10
        assert store.get("T5", "C5", "bot3") is not None


# Durability and concurrency


def test_killed_writer_keeps_acknowledged(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    rng = random.Random(20240601)
    acknowledged: list[str] = []
    for round_number in range(4):
        writer = _writer(data_dir, f"r{round_number}-", 100_000, 30.0)
        try:
            assert writer.stdout.readline() == "ready\n"
            acknowledged.append(writer.stdout.readline().strip())
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            writer.kill()
            output, _ = writer.communicate(timeout=30)
        assert writer.returncode == -9
        # The last line may be cut short by the kill; only whole lines were acknowledged.
        acknowledged.extend(output.split("\n")[:-1])
    with BindingStore(data_dir) as store:
        missing = [name for name in acknowledged if store.get("T1", "C1", name) is None]
    assert len(acknowledged) > 4
    assert missing == []


def test_two_processes_lose_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    count = 200
    writers = [_writer(data_dir, prefix, count, 60.0) for prefix in ("a", "b")]
    try:
        results = [writer.communicate(timeout=90) for writer in writers]
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()
    assert [writer.returncode for writer in writers] == [0, 0], results
    with BindingStore(data_dir) as store:
        assert store.count() == 2 * count
        names = {b.bot for b in store.all()}
    assert names == {f"{prefix}{i}" for prefix in ("a", "b") for i in range(count)}


async def test_threads_share_store(store: BindingStore) -> None:
    bindings = [_binding(bot=f"bot{i}") for i in range(60)]
    await asyncio.gather(*(asyncio.to_thread(store.put, b) for b in bindings))
    assert store.count() == 60


async def test_threads_claim_once(store: BindingStore) -> None:
    claims = await asyncio.gather(
        *(asyncio.to_thread(store.claim_event, "Ev1", 900.0) for _ in range(30))
    )
    assert claims.count(True) == 1


# Files and folders


def test_new_folder_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "data"
    with BindingStore(data_dir):
        assert _mode(data_dir) == 0o700


def test_files_private(tmp_path: Path) -> None:
    with BindingStore(tmp_path) as store:
        store.put(_binding())
        for suffix in ("", "-wal", "-shm"):
            assert _mode(tmp_path / f"relay.db{suffix}") == 0o600, suffix


def test_files_private_with_open_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with BindingStore(tmp_path / "data") as store:
            store.put(_binding())
            modes = {p.name: _mode(p) for p in (tmp_path / "data").iterdir()}
            folder_mode = _mode(tmp_path / "data")
    finally:
        os.umask(old)
    assert folder_mode == 0o700
    assert modes == {"relay.db": 0o600, "relay.db-wal": 0o600, "relay.db-shm": 0o600}


def test_wide_file_mode_tightened(tmp_path: Path) -> None:
    BindingStore(tmp_path).close()
    os.chmod(tmp_path / "relay.db", 0o644)
    with BindingStore(tmp_path):
        assert _mode(tmp_path / "relay.db") == 0o600


def test_folder_under_file_fails(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create the data folder") as caught:
        BindingStore(tmp_path / "file" / "data")
    assert str(tmp_path / "file" / "data") in str(caught.value)


def test_folder_is_file_fails(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("x")
    with pytest.raises(StoreError, match="not a folder"):
        BindingStore(tmp_path / "data")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write any folder")
def test_read_only_folder_fails(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o500)
    try:
        with pytest.raises(StoreError, match="not writable"):
            BindingStore(data_dir)
    finally:
        data_dir.chmod(0o700)


def test_empty_file_opens_as_new(tmp_path: Path) -> None:
    (tmp_path / "relay.db").touch()
    with BindingStore(tmp_path) as store:
        store.put(_binding())
        assert store.count() == 1


# Corrupt and newer files are left alone


def _valid_store_bytes(tmp_path: Path) -> bytes:
    source = tmp_path / "source"
    with BindingStore(source) as store:
        store.put_many(_binding(bot=f"b{i}", channel=f"C{i % 50}") for i in range(3000))
    return (source / "relay.db").read_bytes()


CORRUPTIONS = {
    "random": lambda good: random.Random(1).randbytes(8192),
    "text": lambda good: b"{\"version\": 1, \"bindings\": []}\n",
    "short_header": lambda good: good[:40],
    "garbage_header": lambda good: b"SQLite format 3\x00" + b"\xff" * 84 + good[100:],
    "garbage_page": lambda good: good[:4096] + random.Random(2).randbytes(4096) + good[8192:],
    "truncated": lambda good: good[: len(good) // 2],
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_file_left_alone(tmp_path: Path, kind: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = data_dir / "relay.db"
    path.write_bytes(CORRUPTIONS[kind](_valid_store_bytes(tmp_path)))
    before = _snapshot(path)
    with pytest.raises(StoreCorruptError) as caught:
        BindingStore(data_dir)
    assert str(path) in str(caught.value)
    assert "move it" in str(caught.value)
    assert _snapshot(path) == before


def test_foreign_database_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()
    before = _snapshot(path)
    with pytest.raises(StoreCorruptError, match="not a relay-plugin store"):
        BindingStore(tmp_path)
    assert _snapshot(path) == before


def test_newer_version_left_alone(tmp_path: Path) -> None:
    with BindingStore(tmp_path) as store:
        store.put(_binding())
    conn = sqlite3.connect(tmp_path / "relay.db")
    conn.execute(f"PRAGMA user_version = {BindingStore.SCHEMA_VERSION + 1}")
    conn.close()
    before = _snapshot(tmp_path / "relay.db")
    with pytest.raises(StoreVersionError) as caught:
        BindingStore(tmp_path)
    assert "upgrade relay-plugin" in str(caught.value)
    assert str(tmp_path / "relay.db") in str(caught.value)
    assert _snapshot(tmp_path / "relay.db") == before


# Schema versions and migrations


def test_new_store_header(tmp_path: Path) -> None:
    BindingStore(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "relay.db")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    application_id = conn.execute("PRAGMA application_id").fetchone()[0]
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert version == BindingStore.SCHEMA_VERSION
    assert application_id == APPLICATION_ID
    assert journal == "wal"


def test_connection_durable_settings(store: BindingStore) -> None:
    conn = store._conn  # the store's own connection: these pragmas are per connection
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def _add_notes_column(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE bindings ADD COLUMN notes TEXT NOT NULL DEFAULT ''")


class _StoreNext(BindingStore):
    SCHEMA_VERSION = BindingStore.SCHEMA_VERSION + 1
    MIGRATIONS = (*BindingStore.MIGRATIONS, _add_notes_column)


def test_migration_hook_upgrades(tmp_path: Path) -> None:
    with BindingStore(tmp_path) as store:
        store.put(_binding())
    with _StoreNext(tmp_path) as upgraded:
        assert upgraded.get("T1", "C1", "security-bot") is not None
    conn = sqlite3.connect(tmp_path / "relay.db")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    columns = [row[1] for row in conn.execute("PRAGMA table_info(bindings)")]
    conn.close()
    assert version == BindingStore.SCHEMA_VERSION + 1
    assert "notes" in columns


def test_older_program_rejects_upgraded(tmp_path: Path) -> None:
    _StoreNext(tmp_path).close()
    with pytest.raises(StoreVersionError):
        BindingStore(tmp_path)


# Seen events


def test_claim_event_once(store: BindingStore) -> None:
    assert store.claim_event("Ev1", 900.0) is True
    assert store.claim_event("Ev1", 900.0) is False
    assert store.claim_event("Ev2", 900.0) is True


def test_claim_event_after_expiry(store: BindingStore) -> None:
    assert store.claim_event("Ev1", 0.0) is True
    assert store.claim_event("Ev1", 900.0) is True


def test_claim_event_survives_reopen(tmp_path: Path) -> None:
    with BindingStore(tmp_path) as store:
        store.claim_event("Ev1", 900.0)
    with BindingStore(tmp_path) as store:
        assert store.claim_event("Ev1", 900.0) is False


def _seen_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT count(*) FROM seen_events").fetchone()[0]
    conn.close()
    return rows


def test_prune_removes_expired(tmp_path: Path) -> None:
    with BindingStore(tmp_path, prune_interval_s=0.0) as store:
        for index in range(20):
            store.claim_event(f"Ev{index}", 0.0)
        store.claim_event("kept", 900.0)
        store.claim_event("last", 900.0)
    assert _seen_rows(tmp_path / "relay.db") == 2


def test_prune_waits_for_interval(tmp_path: Path) -> None:
    with BindingStore(tmp_path, prune_interval_s=3600.0) as store:
        for index in range(20):
            store.claim_event(f"Ev{index}", 0.0)
    # The first claim pruned an empty table; the next 19 were within the interval.
    assert _seen_rows(tmp_path / "relay.db") == 20


def test_prune_uses_expiry_index(store: BindingStore) -> None:
    conn = sqlite3.connect(store.path)
    plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + _PRUNE_SQL, (1.0,)))
    conn.close()
    assert "USING COVERING INDEX seen_events_expiry" in plan


@pytest.mark.parametrize(("key", "ttl_s"), [("", 1.0), ("Ev1", -1.0), ("Ev1", float("nan"))])
def test_claim_event_rejects(store: BindingStore, key: str, ttl_s: float) -> None:
    with pytest.raises(ValueError):
        store.claim_event(key, ttl_s)


def test_created_at_recent(store: BindingStore) -> None:
    stored = store.put(_binding())
    assert abs(datetime.now(timezone.utc) - stored.created_at) < timedelta(minutes=1)


@pytest.mark.parametrize(("team", "channel"), [("t0001", "C1"), ("T1", "general"), ("x", "C1")])
def test_non_slack_ids_rejected(tmp_path, team, channel):
    with BindingStore(tmp_path / "data") as store:
        with pytest.raises(InvalidBindingError, match="upper-case letters and digits"):
            store.put(BotBinding(team, channel, "echo", "http://bots.example.com"))


def test_version_one_file_migrates_to_pending_tasks(tmp_path: Path) -> None:
    class _StoreV1(BindingStore):
        SCHEMA_VERSION = 1
        MIGRATIONS = BindingStore.MIGRATIONS[:1]

    with _StoreV1(tmp_path) as old:
        old.put(_binding())
    with BindingStore(tmp_path) as store:
        kept = store.get("T1", "C1", "security-bot")
        tables = [row[0] for row in store.read("SELECT name FROM sqlite_master", ())]
    assert kept is not None
    assert "pending_tasks" in tables


def test_names_differing_in_case_rejected(tmp_path):
    with BindingStore(tmp_path / "data") as store:
        store.put(BotBinding("T1", "C1", "Echo", "http://bots.example.com"))
        with pytest.raises(InvalidBindingError, match="'Echo' is already bound in this channel"):
            store.put(BotBinding("T1", "C1", "echo", "http://bots.example.com"))
        store.put(BotBinding("T1", "C2", "echo", "http://bots.example.com"))
        names = [b.bot for b in store.all()]
    assert names == ["Echo", "echo"]


def test_batch_with_case_twins_rejected(tmp_path):
    with BindingStore(tmp_path / "data") as store:
        with pytest.raises(InvalidBindingError, match="differ only in case"):
            store.put_many([BotBinding("T1", "C1", "A", "http://bots.example.com"),
                            BotBinding("T1", "C1", "a", "http://bots.example.com")])  # fmt: skip
        assert store.count() == 0
