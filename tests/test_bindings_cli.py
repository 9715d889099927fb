"""Tests of HotPlex bindings.json import/export and the ``bindings`` subcommands."""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from relay_plugin.bindings_cli import add_bindings_parser, run_bindings
from relay_plugin.core.hotplex_io import BindingsFileError, export_bindings, import_bindings
from relay_plugin.core.store import BindingStore, BotBinding

ROOT = Path(__file__).resolve().parents[1]
URL = "https://bots.example.com:9080"
ADD_SEC = ("add", "--team", "T1", "--channel", "C1", "--bot", "sec", "--url", URL)

# A bindings.json as HotPlex writes it: no team ids, no per-bot options.
HOTPLEX_FILE = {
    "version": 1,
    "bindings": [
        {
            "platform": "slack",
            "chat_id": "C0123ABCD",
            "bots": {"security-bot": URL, "ops": "http://127.0.0.1:9100/relay"},
        },
        {"platform": "slack", "chat_id": "C0456", "bots": {"docs": "https://docs.example.com"}},
        {"platform": "feishu", "chat_id": "oc_123", "bots": {"helper": "https://x.example.com"}},
    ],
}


def _cli(data_dir: Path, *args: str, stdin: str | None = None, **env: str):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "SLACK_"))}
    return subprocess.run(
        [sys.executable, "-m", "relay_plugin.bindings_cli", "bindings", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**clean, "RELAY_DATA_DIR": str(data_dir), **env},
        timeout=60,
    )


def _run(data_dir: Path, *args: str, **env: str) -> int:
    parser = argparse.ArgumentParser(prog="relay-plugin")
    add_bindings_parser(parser.add_subparsers(dest="command", required=True))
    args_parsed = parser.parse_args(["bindings", *args])
    return run_bindings(args_parsed, {"RELAY_DATA_DIR": str(data_dir), **env})


def _bindings(data_dir: Path) -> list[BotBinding]:
    with BindingStore(data_dir) as store:
        return list(store.all())


def _fields(bindings: list[BotBinding]) -> list[tuple]:
    return [(b.team_id, b.channel_id, b.bot, b.url, b.token, b.dedupe) for b in bindings]


@pytest.fixture
def store(tmp_path: Path):
    with BindingStore(tmp_path / "data") as opened:
        yield opened


# hotplex_io


def test_export_format(store: BindingStore) -> None:
    store.put(BotBinding("T1", "C1", "b", "https://b.example.com", token="tok", dedupe=True))
    store.put(BotBinding("T1", "C1", "a", "https://a.example.com"))
    store.put(BotBinding("T2", "C9", "c", "https://c.example.com", token="tok2"))
    assert export_bindings(store) == {
        "version": 1,
        "bindings": [
            {
                "platform": "slack",
                "chat_id": "C1",
                "team_id": "T1",
                "bots": {"a": "https://a.example.com", "b": "https://b.example.com"},
                "bot_options": {"b": {"dedupe": True}},
            },
            {
                "platform": "slack",
                "chat_id": "C9",
                "team_id": "T2",
                "bots": {"c": "https://c.example.com"},
            },
        ],
    }


def test_export_secrets(store: BindingStore) -> None:
    store.put(BotBinding("T1", "C1", "b", "https://b.example.com", token="tok"))
    entry = export_bindings(store, include_secrets=True)["bindings"][0]
    assert entry["bot_options"] == {"b": {"token": "tok"}}


def test_export_empty(store: BindingStore) -> None:
    assert export_bindings(store) == {"version": 1, "bindings": []}


def test_import_hotplex_file(store: BindingStore) -> None:
    report = import_bindings(store, HOTPLEX_FILE, default_team="T1")
    assert sorted(b.bot for b in report.added) == ["docs", "ops", "security-bot"]
    assert report.updated == []
    assert [s.reason for s in report.skipped] == ["platform 'feishu' is not slack"]
    assert store.get("T1", "C0123ABCD", "ops").url == "http://127.0.0.1:9100/relay"


def test_import_then_export_round_trip(store: BindingStore) -> None:
    import_bindings(store, HOTPLEX_FILE, default_team="T1")
    exported = export_bindings(store)
    slack_entries = [e for e in HOTPLEX_FILE["bindings"] if e["platform"] == "slack"]
    assert exported["bindings"] == [{**e, "team_id": "T1"} for e in slack_entries]


def test_export_import_keeps_options(tmp_path: Path, store: BindingStore) -> None:
    store.put(BotBinding("T1", "C1", "b", "https://b.example.com", token="tok", dedupe=True))
    store.put(BotBinding("T2", "C1", "b", "https://other.example.com"))
    document = json.loads(json.dumps(export_bindings(store, include_secrets=True)))
    with BindingStore(tmp_path / "copy") as copy:
        import_bindings(copy, document)
        assert _fields(list(copy.all())) == _fields(list(store.all()))


def test_import_without_team_fails(store: BindingStore) -> None:
    with pytest.raises(BindingsFileError) as caught:
        import_bindings(store, HOTPLEX_FILE)
    assert "entry 0 (chat_id C0123ABCD): no team_id" in str(caught.value)
    assert store.count() == 0


def test_import_entry_team_wins(store: BindingStore) -> None:
    data = {"version": 1, "bindings": [{"chat_id": "C1", "team_id": "T9", "bots": {"a": URL}}]}
    import_bindings(store, data, default_team="T1")
    assert store.get("T9", "C1", "a") is not None


@pytest.mark.parametrize("version", [2, 0, None, "1", True])
def test_import_rejects_version(store: BindingStore, version) -> None:
    with pytest.raises(BindingsFileError, match="unsupported version"):
        import_bindings(store, {"version": version, "bindings": []}, default_team="T1")


def test_import_lists_every_invalid(store: BindingStore) -> None:
    data = {
        "version": 1,
        "bindings": [
            {"chat_id": "C1", "bots": {"good": URL, "bad name": URL}},
            {"chat_id": "C2", "bots": {"ftp": "ftp://files.example.com"}},
            {"chat_id": "C3", "bots": ["not", "a", "map"]},
        ],
    }
    with pytest.raises(BindingsFileError) as caught:
        import_bindings(store, data, default_team="T1")
    problems = caught.value.problems
    assert len(problems) == 3
    assert "'bad name'" in problems[0]
    assert "ftp://files.example.com" in problems[1]
    assert "entry 2 (chat_id C3)" in problems[2]
    assert store.count() == 0


def test_import_rejects_duplicate_key(store: BindingStore) -> None:
    entry = {"chat_id": "C1", "bots": {"a": URL}}
    with pytest.raises(BindingsFileError, match="already given in entry 0"):
        import_bindings(store, {"version": 1, "bindings": [entry, entry]}, default_team="T1")


@pytest.mark.parametrize(
    "options",
    [
        {"ghost": {"dedupe": True}},
        {"a": {"dedup": True}},
        {"a": {"dedupe": "yes"}},
        {"a": {"token": 5}},
        [],
    ],
    ids=["unknown_bot", "unknown_option", "dedupe_text", "token_number", "not_object"],
)
def test_import_rejects_bad_options(store: BindingStore, options) -> None:
    entry = {"chat_id": "C1", "team_id": "T1", "bots": {"a": URL}, "bot_options": options}
    with pytest.raises(BindingsFileError, match="bot_options"):
        import_bindings(store, {"version": 1, "bindings": [entry]})
    assert store.count() == 0


def test_import_null_bindings(store: BindingStore) -> None:
    report = import_bindings(store, {"version": 1, "bindings": None})
    assert report.added == []


def test_import_unchanged_skipped(store: BindingStore) -> None:
    import_bindings(store, HOTPLEX_FILE, default_team="T1")
    report = import_bindings(store, HOTPLEX_FILE, default_team="T1")
    assert report.added == []
    assert [s.reason for s in report.skipped].count("unchanged") == 3


def test_import_updates_url_keeps_token(store: BindingStore) -> None:
    store.put(BotBinding("T1", "C1", "a", "https://old.example.com", token="tok"))
    data = {"version": 1, "bindings": [{"chat_id": "C1", "bots": {"a": URL}}]}
    report = import_bindings(store, data, default_team="T1")
    assert [b.bot for b in report.updated] == ["a"]
    assert store.get("T1", "C1", "a").url == URL
    assert store.get("T1", "C1", "a").token == "tok"


# Command line, in process


def test_run_add_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, *ADD_SEC, "--token", "hunter2") == 0
    assert _run(tmp_path, "list") == 0
    output = capsys.readouterr().out
    assert "token: set" in output
    assert "hunter2" not in output
    assert URL in output


def test_run_list_filters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for team, channel, bot in (("T1", "C1", "one"), ("T1", "C2", "two"), ("T2", "C1", "three")):
        _run(tmp_path, "add", "--team", team, "--channel", channel, "--bot", bot, "--url", URL)
    capsys.readouterr()
    _run(tmp_path, "list", "--team", "T1", "--channel", "C1")
    both = capsys.readouterr().out
    _run(tmp_path, "list", "--channel", "C1")
    channel_only = capsys.readouterr().out
    assert "one" in both
    assert "two" not in both
    assert "three" in channel_only
    assert "two" not in channel_only


def test_run_list_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    BindingStore(tmp_path).close()
    assert _run(tmp_path, "list") == 0
    assert capsys.readouterr().out == "no bindings\n"


def test_run_token_from_env(tmp_path: Path) -> None:
    assert _run(tmp_path, *ADD_SEC, "--token-env", "SEC_TOKEN", SEC_TOKEN="from-env") == 0
    assert _bindings(tmp_path)[0].token == "from-env"
    assert _run(tmp_path, *ADD_SEC, "--token-env", "MISSING_TOKEN") == 2


def test_run_bad_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, "list", RELAY_RETRIES="many") == 2
    assert "RELAY_RETRIES" in capsys.readouterr().err


# Command line, as a subprocess


def test_cli_add_remove(tmp_path: Path) -> None:
    added = _cli(tmp_path, *ADD_SEC, "--dedupe")
    assert added.returncode == 0, added.stderr
    assert "added sec in T1/C1" in added.stdout
    removed = _cli(tmp_path, "remove", "--team", "T1", "--channel", "C1", "--bot", "sec")
    assert removed.returncode == 0, removed.stderr
    assert _bindings(tmp_path) == []


def test_cli_remove_missing(tmp_path: Path) -> None:
    _cli(tmp_path, *ADD_SEC)
    result = _cli(tmp_path, "remove", "--team", "T1", "--channel", "C1", "--bot", "nope")
    assert result.returncode == 2
    assert "no bot named 'nope'" in result.stderr
    assert "bound here: sec" in result.stderr


def test_cli_add_invalid_url(tmp_path: Path) -> None:
    result = _cli(tmp_path, *ADD_SEC[:-1], "bots:9080")
    assert result.returncode == 2
    assert "'bots:9080'" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_cli_import_export_round_trip(tmp_path: Path) -> None:
    source = tmp_path / "bindings.json"
    source.write_text(json.dumps(HOTPLEX_FILE))
    imported = _cli(tmp_path / "data", "import", str(source), "--team", "T1")
    assert imported.returncode == 0, imported.stderr
    assert "3 added, 0 updated, 1 skipped" in imported.stdout
    exported = _cli(tmp_path / "data", "export")
    assert exported.returncode == 0, exported.stderr
    slack_entries = [e for e in HOTPLEX_FILE["bindings"] if e["platform"] == "slack"]
    expected = [{**entry, "team_id": "T1"} for entry in slack_entries]
    assert json.loads(exported.stdout)["bindings"] == expected


def test_cli_import_stdin(tmp_path: Path) -> None:
    result = _cli(tmp_path, "import", "-", "--team", "T1", stdin=json.dumps(HOTPLEX_FILE))
    assert result.returncode == 0, result.stderr
    assert len(_bindings(tmp_path)) == 3


def test_cli_import_missing_file(tmp_path: Path) -> None:
    result = _cli(tmp_path, "import", str(tmp_path / "absent.json"))
    assert result.returncode == 2
    assert "absent.json: file not found" in result.stderr


def test_cli_import_bad_json(tmp_path: Path) -> None:
    result = _cli(tmp_path, "import", "-", stdin='{"version": 1,')
    assert result.returncode == 2
    assert "standard input: invalid JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_import_invalid_imports_nothing(tmp_path: Path) -> None:
    data = {"version": 1, "bindings": [{"chat_id": "C1", "bots": {"ok": URL, "b@d": URL}}]}
    result = _cli(tmp_path, "import", "-", "--team", "T1", stdin=json.dumps(data))
    assert result.returncode == 2
    assert "'b@d'" in result.stderr
    assert _bindings(tmp_path) == []


def test_cli_export_file_private(tmp_path: Path) -> None:
    _cli(tmp_path / "data", *ADD_SEC, "--token", "tok")
    target = tmp_path / "out.json"
    target.write_text("old")
    os.chmod(target, 0o644)
    result = _cli(tmp_path / "data", "export", str(target), "--include-secrets")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert json.loads(target.read_text())["bindings"][0]["bot_options"] == {"sec": {"token": "tok"}}


def test_cli_export_hides_tokens(tmp_path: Path) -> None:
    _cli(tmp_path, *ADD_SEC, "--token", "tok")
    result = _cli(tmp_path, "export")
    assert "tok\"" not in result.stdout
    assert "--include-secrets" in result.stderr


def test_cli_export_unwritable_path(tmp_path: Path) -> None:
    BindingStore(tmp_path / "data").close()
    result = _cli(tmp_path / "data", "export", str(tmp_path / "missing" / "out.json"))
    assert result.returncode == 1
    assert "cannot write it" in result.stderr


def test_cli_corrupt_store(tmp_path: Path) -> None:
    (tmp_path / "relay.db").write_bytes(b"not a database at all" * 10)
    result = _cli(tmp_path, "list")
    assert result.returncode == 1
    assert str(tmp_path / "relay.db") in result.stderr
    assert "move it" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_usage_error(tmp_path: Path) -> None:
    result = _cli(tmp_path, "add", "--team", "T1")
    assert result.returncode == 2
    assert "required" in result.stderr


def test_import_without_version_or_bindings_explains(tmp_path):
    from relay_plugin.core.hotplex_io import BindingsFileError, import_bindings
    from relay_plugin.core.store import BindingStore

    with BindingStore(tmp_path / "data") as store:
        with pytest.raises(BindingsFileError, match="'version' is missing"):
            import_bindings(store, {"bindings": []}, default_team="T1")
        with pytest.raises(BindingsFileError, match="'bindings' is missing"):
            import_bindings(store, {"version": 1}, default_team="T1")


def test_list_and_export_do_not_create_store(tmp_path):
    data = tmp_path / "data"
    env = {**os.environ, "RELAY_DATA_DIR": str(data)}
    listed = subprocess.run([sys.executable, "-m", "relay_plugin", "bindings", "list"],
                            capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    exported = subprocess.run([sys.executable, "-m", "relay_plugin", "bindings", "export"],
                              capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert listed.returncode == 0
    assert "no bindings (no store at" in listed.stdout
    assert exported.returncode == 2
    assert "no binding store at" in exported.stderr
    assert not data.exists()
