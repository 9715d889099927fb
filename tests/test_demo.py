"""The demo command, run as a user runs it."""

import os
import subprocess
import sys


def run_demo(*args, stdin=""):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "RELAY_"))}
    return subprocess.run(
        [sys.executable, "-m", "relay_plugin", "demo", *args],
        input=stdin, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def test_demo_prints_thread_and_exits_zero():
    result = run_demo()
    assert result.returncode == 0, result.stderr
    assert "Bound *echo* in this channel" in result.stdout
    assert "echo: Hello from the demo!" in result.stdout
    assert "127.0.0.1" in result.stdout


def test_demo_interactive_runs_typed_lines():
    typed = "/relay list\n@relay echo typed by hand\nnonsense\nquit\n"
    result = run_demo("--interactive", stdin=typed)
    assert result.returncode == 0, result.stderr
    assert "Bots bound in this channel (1):" in result.stdout
    assert "echo: typed by hand" in result.stdout
    assert "Type '/relay <args>'" in result.stdout
