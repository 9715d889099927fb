"""Log lines: relay ids on every record of a relay, and RELAY_LOG_FORMAT=json."""

import asyncio
import io
import json
import logging

from harness import BOT_TOKEN, SIGNING_SECRET, app_env, running_stack, serve_until_exit
from relay_plugin.logs import (
    JsonFormatter,
    RelayIdsFilter,
    TextFormatter,
    relay_log_context,
    set_relay_log_context,
)
from relay_plugin.tools.simulator import SlackSimulator


def capture(formatter: logging.Formatter, name: str) -> tuple[logging.Logger, io.StringIO]:
    """Return a logger that writes through ``formatter`` into the returned buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RelayIdsFilter())
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test_logs.{name}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_json_line_fields():
    logger, stream = capture(JsonFormatter(), "fields")
    with relay_log_context(task_id="t-1", channel="C0001", bot="echo"):
        logger.info("relay done status=%s", "completed")
    entry = json.loads(stream.getvalue())
    assert entry["message"] == "relay done status=completed"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "test_logs.fields"
    assert entry["task_id"] == "t-1"
    assert entry["channel"] == "C0001"
    assert entry["bot"] == "echo"
    assert entry["time"].endswith("Z")


def test_json_one_line_per_record():
    logger, stream = capture(JsonFormatter(), "multiline")
    try:
        raise ValueError("first line\nsecond line")
    except ValueError:
        logger.exception("answer not posted:\n%s", "two\nlines")
    lines = stream.getvalue().splitlines()
    entry = json.loads(lines[0])
    assert len(lines) == 1
    assert entry["message"] == "answer not posted:\ntwo\nlines"
    assert "ValueError: first line" in entry["exception"]


def test_json_without_relay():
    logger, stream = capture(JsonFormatter(), "plain")
    logger.warning("listening")
    entry = json.loads(stream.getvalue())
    assert "task_id" not in entry
    assert "bot" not in entry


def test_text_adds_missing_ids():
    logger, stream = capture(TextFormatter(), "text")
    with relay_log_context(task_id="t-2", channel="C0002", bot="review"):
        logger.info("relay to http://x/relay: attempt 1 failed")
        logger.info("relay done bot=review channel=C0002 task=t-2 status=completed")
    first, second = stream.getvalue().splitlines()
    assert first.endswith("attempt 1 failed task=t-2 channel=C0002 bot=review")
    assert second.endswith("relay done bot=review channel=C0002 task=t-2 status=completed")


def test_context_ends_with_block():
    logger, stream = capture(TextFormatter(), "scope")
    with relay_log_context(task_id="t-3", channel="C0003", bot="echo"):
        pass
    logger.info("after the relay")
    assert "task=" not in stream.getvalue()


async def test_task_context_stays_in_task():
    logger, stream = capture(TextFormatter(), "tasks")

    async def relay() -> None:
        set_relay_log_context(task_id="t-4", channel="C0004", bot="echo")
        logger.info("inside")

    await asyncio.create_task(relay())
    logger.info("outside")
    inside, outside = stream.getvalue().splitlines()
    assert inside.endswith("inside task=t-4 channel=C0004 bot=echo")
    assert outside.endswith("outside")


async def test_serve_json_lines(tmp_path):
    async with running_stack(tmp_path / "data", RELAY_LOG_FORMAT="json") as stack:
        await stack.command(f"bind echo {stack.agent_url}")
        event = await stack.mention("echo hello")
        await stack.final_replies("C0001", event["ts"])
        await stack.app.wait_for_log("relay done")
    entries = [json.loads(line) for line in stack.app.logs if line.strip()]
    done = [entry for entry in entries if entry["message"].startswith("relay done")]
    assert len(done) == 1
    assert done[0]["bot"] == "echo"
    assert done[0]["channel"] == "C0001"
    assert len(done[0]["task_id"]) == 36
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    assert not any(BOT_TOKEN in line or SIGNING_SECRET in line for line in stack.app.logs)


async def test_serve_slack_failure_names_relay(tmp_path):
    async with running_stack(tmp_path / "data") as stack:
        await stack.command(f"bind echo {stack.agent_url}")
        stack.sim.fail_next("chat.update", "cant_update_message")
        event = await stack.mention("echo hello")
        await stack.final_replies("C0001", event["ts"])
        line = await stack.app.wait_for_log("chat.update failed")
    assert "channel=C0001" in line
    assert "bot=echo" in line
    assert "task=" in line


async def test_serve_rejects_unknown_format(tmp_path):
    async with SlackSimulator() as sim:
        env = app_env(sim, tmp_path / "data", RELAY_LOG_FORMAT="xml")
        returncode, stderr = await serve_until_exit(env)
    assert returncode == 2
    assert b"RELAY_LOG_FORMAT='xml' is not text or json; logging as text" in stderr
    assert b"RELAY_LOG_FORMAT: 'xml' is not one of text, json" in stderr


def test_bolt_token_warning_dropped():
    import io
    import logging

    from relay_plugin.logs import configure_logging

    root = logging.getLogger()
    saved = list(root.handlers)
    for handler in saved:
        root.removeHandler(handler)
    stream = io.StringIO()
    try:
        configure_logging("INFO", stream=stream)
        logging.getLogger("slack_bolt.AsyncApp").warning(
            "As you gave `client` as well, `token` will be unused."
        )
        logging.getLogger("slack_bolt.AsyncApp").warning("another Bolt warning")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
    assert "will be unused" not in stream.getvalue()
    assert "another Bolt warning" in stream.getvalue()
