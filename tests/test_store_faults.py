"""A full disk or a read-only data folder when binding: a clear error, and the store intact."""

import os
import subprocess
import sys

import pytest

def bindings(data_dir, *args, preexec=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "RELAY_"))}
    env["RELAY_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "relay_plugin", "bindings", *args],
        capture_output=True, text=True, timeout=60, env=env, preexec_fn=preexec,
    )  # fmt: skip


def add(data_dir, bot, url="http://bots.example.com:9080", preexec=None):
    return bindings(data_dir, "add", "--team", "T1", "--channel", "C1", "--bot", bot,
                    "--url", url, preexec=preexec)  # fmt: skip


def snapshot(data_dir):
    return {path.name: path.read_bytes() for path in data_dir.iterdir()}


@pytest.fixture
def store_with_one(tmp_path):
    data = tmp_path / "data"
    result = add(data, "first")
    assert result.returncode == 0, result.stderr
    return data


# Runs inside a private user and mount namespace: the data folder is copied onto a small tmpfs
# that is then filled, leaving room for SQLite's 32 KiB shared-memory file and one page, but not
# for the write-ahead log frames of the new binding. The bind then hits a real ENOSPC.
FULL_DISK_SCRIPT = """
d="$0"; py="$1"
copy=$(mktemp -d); cp -a "$d"/. "$copy"/
mount -t tmpfs -o size=512k tmpfs "$d" || exit 90
cp -a "$copy"/. "$d"/
dd if=/dev/zero of="$d/filler" bs=4096 2>/dev/null
free=$(df -B1 --output=avail "$d" | tail -1)
truncate -s -$((36864 - free)) "$d/filler"
RELAY_DATA_DIR="$d" "$py" -m relay_plugin bindings add --team T1 --channel C1 --bot second \
    --url "http://x.example/$(printf 'p%.0s' $(seq 1 1800))"
echo "ADD_STATUS=$?"
RELAY_DATA_DIR="$d" "$py" -m relay_plugin bindings list
echo "LIST_STATUS=$?"
"""


def test_full_disk_when_binding(store_with_one):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "RELAY_"))}
    result = subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", FULL_DISK_SCRIPT, str(store_with_one), sys.executable],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    if result.returncode == 90 or "unshare:" in result.stderr:
        pytest.skip("this machine cannot mount a tmpfs in a user namespace")
    assert "ADD_STATUS=1" in result.stdout, result.stderr
    assert "the disk is full" in result.stderr
    assert "Nothing was changed" in result.stderr
    assert str(store_with_one / "relay.db") in result.stderr
    assert "Traceback" not in result.stderr
    assert "LIST_STATUS=0" in result.stdout
    assert "first" in result.stdout
    assert "second" not in result.stdout


def read_only_mount_works(path) -> bool:
    probe = subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c",
         'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && ! touch "$0/probe"', str(path)],
        capture_output=True, timeout=30,
    )  # fmt: skip
    return probe.returncode == 0


def test_read_only_folder_when_binding(store_with_one):
    if not read_only_mount_works(store_with_one):
        pytest.skip("this machine cannot make a read-only bind mount in a user namespace")
    before = snapshot(store_with_one)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "RELAY_"))}
    env["RELAY_DATA_DIR"] = str(store_with_one)
    # The folder is remounted read-only inside a private mount namespace, as a read-only
    # volume would be; the bind command then runs there.
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    result = subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", script, str(store_with_one), sys.executable, "-m",
         "relay_plugin", "bindings", "add", "--team", "T1", "--channel", "C1", "--bot", "second",
         "--url", "http://bots.example.com:9080"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    listed = bindings(store_with_one, "list")
    assert result.returncode == 1, result.stderr
    assert str(store_with_one) in result.stderr
    assert "not writable" in result.stderr
    assert "Traceback" not in result.stderr
    assert "first" in listed.stdout
    assert "second" not in listed.stdout
    assert snapshot(store_with_one)["relay.db"] == before["relay.db"]
