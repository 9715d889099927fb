"""The ``relay-plugin`` command: serve, agent, demo and bindings."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from relay_plugin import __version__
from relay_plugin.config import Settings
from relay_plugin.errors import ConfigError, RelayPluginError, StoreError
from relay_plugin.logs import configure_logging

log = logging.getLogger("relay_plugin")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every subcommand."""
    from relay_plugin.bindings_cli import add_bindings_parser

    parser = argparse.ArgumentParser(
        prog="relay-plugin",
        description="Slack app that relays @mentions to remote AI-agent bots.",
    )
    parser.add_argument("--version", action="version", version=f"relay-plugin {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "serve",
        help="run the Slack app (configured by environment variables; see README)",
        description="Run the Slack app on HOST:PORT, with Slack's requests at /slack/events, or "
        "with events and commands over Socket Mode when SLACK_APP_TOKEN is set.",
    )
    commands.add_parser(
        "check",
        help="check the settings, the Slack token, the store and every bound endpoint",
        description="Validate the settings, call Slack's auth.test with the bot token, open the "
        "binding store, and probe /healthz of every bound endpoint. Prints one line per "
        "problem with its fix; exits 0 when everything is healthy and 1 otherwise.",
    )
    agent = commands.add_parser(
        "agent",
        help="run the reference relay agent",
        description="Run the reference agent: POST /relay returns a RelayResponse.",
    )
    agent.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    agent.add_argument("--port", type=_port, default=9080, help="port to listen on (default 9080)")
    agent.add_argument("--token", default="", help="bearer token that requests must carry (default: none)")
    agent.add_argument(
        "--mode",
        default="echo",
        help="echo (default), delay:SECONDS, fail-first:N, fail, or async[:SECONDS] (answer 202, "
        "then post the result to the task's reply_to URL)",
    )
    demo = commands.add_parser(
        "demo",
        help="run the whole app against a local Slack simulator and print the thread",
        description="Start a Slack simulator, the reference agent and the app on loopback, "
        "bind a bot, mention it, and print the thread. Needs no Slack account.",
    )
    demo.add_argument(
        "--interactive",
        action="store_true",
        help="read '/relay ...' and '@relay ...' lines from the terminal after the scripted run",
    )
    add_bindings_parser(commands)
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is out of range; use 0 to 65535")
    return port


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    # The demo prints a Slack thread and check prints a report; INFO lines would bury them.
    default_level = "WARNING" if args.command in ("demo", "check") else "INFO"
    configure_logging(env.get("RELAY_LOG_LEVEL", default_level), env.get("RELAY_LOG_FORMAT", ""))
    if args.command == "bindings":
        from relay_plugin.bindings_cli import run_bindings

        return run_bindings(args, env)
    if args.command == "agent":
        from relay_plugin.tools.agent import parse_mode, run_agent

        try:
            parse_mode(args.mode)
        except ValueError as exc:
            print(f"relay-plugin agent: {exc}", file=sys.stderr)
            return 2
        try:
            run_agent(args.host, args.port, args.token, args.mode)
        except OSError as exc:
            print(f"relay-plugin agent: cannot listen on {args.host}:{args.port}: {exc}",
                  file=sys.stderr)  # fmt: skip
            return 1
        return 0
    if args.command == "check":
        from relay_plugin.check import run_check

        return run_check(env)
    if args.command == "demo":
        from relay_plugin.tools.demo import run_demo

        return asyncio.run(run_demo(interactive=args.interactive))
    return serve(env)


def serve(env: Mapping[str, str]) -> int:
    """Run the Slack app until SIGTERM or SIGINT."""
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        print(f"relay-plugin serve: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(settings))
    except ConfigError as exc:
        print(f"relay-plugin serve: configuration error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"relay-plugin serve: {exc}", file=sys.stderr)
        return 1
    except RelayPluginError as exc:  # the first Socket Mode connection failed
        print(f"relay-plugin serve: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"relay-plugin serve: cannot listen on {settings.host}:{settings.port}: {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


async def _serve(settings: Settings) -> None:
    from aiohttp import web

    from relay_plugin.slack.app import BOLT, SLACK_EVENTS_PATH, create_web_app
    from relay_plugin.slack.socket_mode import SocketModeConnection

    runner = web.AppRunner(create_web_app(settings), handle_signals=False, access_log=None)
    await runner.setup()
    # Everything allocated at start-up (modules, Bolt, the store) is long-lived. Freezing it
    # keeps the garbage collector from walking it again on every full collection, whose pauses
    # otherwise delay Slack's acknowledgements under load.
    gc.freeze()
    socket_mode: SocketModeConnection | None = None
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        for host, port, *_ in runner.addresses:
            if settings.socket_mode:
                log.info("listening on http://%s:%d (Slack transport: Socket Mode, no Slack "
                         "requests on this port)", host, port)  # fmt: skip
            else:
                log.info("listening on http://%s:%d (Slack transport: HTTP, requests at %s)",
                         host, port, SLACK_EVENTS_PATH)  # fmt: skip
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        if settings.socket_mode:
            socket_mode = SocketModeConnection(runner.app[BOLT], settings.slack_app_token)
            await socket_mode.open()
        await stop.wait()
        log.info("stopping: no new requests; waiting for relays in flight")
    finally:
        # Closing the websocket first stops new envelopes, as stopping the site stops requests.
        if socket_mode is not None:
            await socket_mode.close()
        await runner.cleanup()
    log.info("stopped")
