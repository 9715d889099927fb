"""The relay-plugin command line: clear errors, no tracebacks."""

import os
import socket
import subprocess
import sys


def run(*args, stdin=""):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "RELAY_"))}
    return subprocess.run(
        [sys.executable, "-m", "relay_plugin", *args],
        input=stdin, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def test_agent_port_out_of_range():
    result = run("agent", "--port", "99999")
    assert result.returncode == 2
    assert "99999 is out of range; use 0 to 65535" in result.stderr


def test_agent_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("agent", "--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening on" not in result.stderr


def test_agent_bad_mode():
    result = run("agent", "--mode", "sometimes")
    assert result.returncode == 2
    assert "sometimes" in result.stderr


def test_demo_test_without_bot_does_not_hang():
    result = run("demo", "--interactive", stdin="/relay test\n/relay test nosuch\n/relay status\n\n")
    assert result.returncode == 0, result.stderr
    assert "exactly one bot name" in result.stdout
    assert "No bot named *nosuch* is bound in this channel" in result.stdout
    assert "<!date^" not in result.stdout


def test_demo_escapes_typed_markup():
    result = run("demo", "--interactive", stdin="@relay echo a <b> & c\n\n")
    assert result.returncode == 0, result.stderr
    assert "echo: a <b> & c" in result.stdout
