"""``relay-plugin demo``: the whole main job on loopback, with no Slack account.

Starts the Slack simulator, the reference agent and the real app on free 127.0.0.1 ports, binds
``echo`` with ``/relay bind``, mentions it, and prints what a Slack user would see.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from aiohttp import web

from relay_plugin.config import Settings
from relay_plugin.slack.app import SLACK_EVENTS_PATH, create_web_app
from relay_plugin.slack.text import decode_slack_text, escape_text
from relay_plugin.tools.agent import start_agent
from relay_plugin.tools.simulator import SlackSimulator, render_thread
from relay_plugin.tools.slack_client import SignedSlackClient, mention_text

CHANNEL = "C0001"
USER = "U0001"
SIGNING_SECRET = "demo-signing-secret"
BOT_TOKEN = "xoxb-demo"
ANSWER_TIMEOUT_S = 15.0
PROMPT_HELP = (
    "Type '/relay <args>' to run the slash command, '@relay <bot> <text>' to mention the app, "
    "or 'quit' (or an empty line) to stop."
)


async def run_demo(*, interactive: bool = False, out: TextIO = sys.stdout) -> int:
    """Run the scripted demo (and then the prompt, if ``interactive``); returns the exit code."""
    with tempfile.TemporaryDirectory(prefix="relay-demo-") as data_dir:
        async with SlackSimulator(bot_token=BOT_TOKEN) as sim:
            agent_runner, agent_url = await start_agent(name="echo")
            app_runner, app_url = await _start_app(sim, Path(data_dir))
            slack = SignedSlackClient(app_url + SLACK_EVENTS_PATH, SIGNING_SECRET, sim)
            try:
                print(f"Slack simulator  {sim.base_url}", file=out)
                print(f"reference agent  {agent_url}/relay", file=out)
                print(f"relay app        {app_url}{SLACK_EVENTS_PATH}\n", file=out)
                ok = await _command(sim, slack, f"bind echo {agent_url}", out)
                ok = ok and await _mention(sim, slack, "echo Hello from the demo! **bold** and `code`", out)
                if interactive:
                    await _prompt(sim, slack, out)
            finally:
                await app_runner.cleanup()
                await agent_runner.cleanup()
    return 0 if ok else 1


async def _start_app(sim: SlackSimulator, data_dir: Path) -> tuple[web.AppRunner, str]:
    settings = Settings.from_env(
        {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": sim.api_url,
            "RELAY_DATA_DIR": str(data_dir),
            "RELAY_INSTANCE_NAME": "demo-relay",
            "RELAY_SHUTDOWN_GRACE_S": "5",
            # The reference agent listens on loopback, which relays may reach only when listed.
            "RELAY_ALLOWED_HOSTS": "127.0.0.1,::1",
        }
    )
    runner = web.AppRunner(create_web_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def _command(sim: SlackSimulator, slack: SignedSlackClient, text: str, out: TextIO) -> bool:
    print(f"alice: /relay {text}", file=out)
    before = len(sim.responses)
    result = await slack.command(text, channel=CHANNEL, user=USER)
    if result.status != 200:
        print(f"  (the app answered HTTP {result.status}: {result.text})\n", file=out)
        return False
    ack = result.json().get("text", "")
    _print_indented(ack, out)
    if ack.startswith("Testing "):
        await sim.wait_for(lambda: len(sim.responses) > before, ANSWER_TIMEOUT_S)
        _print_indented(sim.responses[-1].get("text", ""), out)
    print(file=out)
    return True


async def _mention(sim: SlackSimulator, slack: SignedSlackClient, rest: str, out: TextIO) -> bool:
    # Slack escapes what a person types, so a typed "<b>" reaches the app as "&lt;b&gt;".
    typed = escape_text(rest)
    status, envelope = await slack.mention(mention_text(sim.bot_user_id, typed), channel=CHANNEL, user=USER)
    if status != 200:
        print(f"(the app answered HTTP {status} to the mention)", file=out)
        return False
    thread_ts = envelope["event"]["ts"]

    def answered() -> bool:
        replies = [m for m in sim.thread(CHANNEL, thread_ts) if m.user == sim.bot_user_id]
        return bool(replies) and all("waiting for the answer" not in m.text for m in replies)

    try:
        await sim.wait_for(answered, ANSWER_TIMEOUT_S, description="the answer in the thread")
    except TimeoutError as exc:
        print(f"(no answer: {exc})", file=out)
        return False
    print(render_thread(sim, CHANNEL, thread_ts, viewer=USER), file=out)
    print(file=out)
    return True


async def _prompt(sim: SlackSimulator, slack: SignedSlackClient, out: TextIO) -> None:
    print(PROMPT_HELP, file=out)
    loop = asyncio.get_running_loop()
    while True:
        print("> ", end="", file=out, flush=True)
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if not line or line in ("quit", "exit"):
            return
        if line.startswith("/relay"):
            await _command(sim, slack, line[len("/relay"):].strip(), out)
        elif line.startswith("@relay"):
            await _mention(sim, slack, line[len("@relay"):].strip(), out)
        else:
            print(PROMPT_HELP, file=out)


def _print_indented(text: str, out: TextIO) -> None:
    print("relay (app): (only visible to you)", file=out)
    for line in decode_slack_text(text).splitlines():
        print(f"  {line}", file=out)
