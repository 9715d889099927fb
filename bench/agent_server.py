"""Run the reference relay agent on a free 127.0.0.1 port until SIGTERM (a benchmark child).

Logs ``listening on http://127.0.0.1:PORT`` once it accepts requests, which is how the driver
learns the port. The ``relay-plugin agent`` command needs a fixed port, so it is not used here.

``GET /bench/timings`` returns when each relay arrived and when its response was ready, keyed by
the relayed text, as ``time.perf_counter`` values, and clears them. On Linux that clock is
CLOCK_MONOTONIC, which all processes share, so the driver can compare them with its own times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from relay_plugin.tools.agent import create_agent_app, parse_mode

log = logging.getLogger("bench.agent")


MAX_TIMINGS = 100_000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RelayTimings:
    """Arrival and response times of relays, keyed by the relayed text."""

    def __init__(self) -> None:
        self.times: dict[str, tuple[float, float]] = {}

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Time each ``POST /relay`` from arrival to its response being ready."""
        arrived = time.perf_counter()
        response = await handler(request)
        if request.path == "/relay":
            try:
                content = str(json.loads(await request.read()).get("content", ""))
            except (ValueError, AttributeError):
                content = ""
            if len(self.times) >= MAX_TIMINGS:
                self.times.clear()
            self.times[content] = (arrived, time.perf_counter())
        return response

    async def handle(self, request: web.Request) -> web.Response:
        """Handle ``GET /bench/timings``: return the times recorded so far and clear them."""
        times, self.times = self.times, {}
        return web.json_response(times)


async def serve(mode: str) -> None:
    """Serve the agent until SIGTERM or SIGINT."""
    app = create_agent_app(mode=mode, name="echo")
    timings = RelayTimings()
    app.middlewares.append(timings.middleware)
    app.router.add_get("/bench/timings", timings.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    log.warning("listening on %s (mode %s)", url, mode)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> int:
    """Parse the mode and serve."""
    parser = argparse.ArgumentParser(description="Reference relay agent for the benchmark.")
    parser.add_argument("--mode", default="echo", help="echo, delay:SECONDS, fail-first:N or fail")
    args = parser.parse_args()
    try:
        parse_mode(args.mode)
    except ValueError as exc:
        print(f"agent_server: {exc}", file=sys.stderr)
        return 2
    # WARNING hides the agent's line per task, which would cost CPU that the plugin competes for.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(serve(args.mode))
    return 0


if __name__ == "__main__":
    sys.exit(main())
