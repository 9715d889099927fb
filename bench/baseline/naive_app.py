"""The relay app as people often write it first: the benchmark's baseline, not part of the plugin.

A synchronous Bolt ``App`` served by the standard library's single-threaded WSGI server. Bolt
acknowledges each event and runs the listener in its thread pool (5 threads by default), and the
listener calls the agent with ``requests`` (retrying with blocking sleeps) and posts the answer
with ``chat.postMessage``. It keeps no store, no deduplication and no circuit breakers, so it
does less work per relay than the plugin.

Environment: SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, SLACK_API_URL, AGENT_URL (the agent's base
URL; relays go to AGENT_URL/relay), HOST and PORT (0 picks a free port).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server

import requests
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient

log = logging.getLogger("naive")

RETRIES = 3
RETRY_STATUSES = {429, 502, 503, 504}
_MENTION = re.compile(r"^\s*<@[A-Z0-9]+>\s*")


class Server(WSGIServer):
    """The standard library's WSGI server with a listen backlog of 128 instead of 5.

    With 5, a burst of connections overflows the backlog and clients wait for SYN retransmits
    (1 s, 3 s, ...), which would measure the kernel's backoff rather than this app.
    """

    request_queue_size = 128


def ask_agent(agent_url: str, bot: str, text: str, session_key: str) -> str:
    """POST a RelayMessage and return the answer's content, sleeping 1, 2, 4 s between retries."""
    message = {
        "task_id": str(uuid.uuid4()),
        "from": "naive-relay",
        "to": bot,
        "content": text,
        "message": text,
        "session_key": session_key,
        "created_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
    }
    for attempt in range(RETRIES + 1):
        try:
            response = requests.post(f"{agent_url}/relay", json=message, timeout=120)
        except requests.ConnectionError as exc:
            log.warning("agent not reachable (attempt %d): %s", attempt + 1, exc)
        else:
            if response.status_code not in RETRY_STATUSES:
                response.raise_for_status()
                return str(response.json().get("content", ""))
            log.warning("agent responded with HTTP %d (attempt %d); retrying",
                        response.status_code, attempt + 1)  # fmt: skip
        if attempt < RETRIES:
            time.sleep(2**attempt)
    raise RuntimeError(f"the agent at {agent_url} failed {RETRIES + 1} times")


def create_app(env: dict[str, str]) -> App:
    """Build the Bolt app; its constructor calls auth.test on the Web API."""
    client = WebClient(token=env["SLACK_BOT_TOKEN"], base_url=env["SLACK_API_URL"])
    app = App(client=client, signing_secret=env["SLACK_SIGNING_SECRET"])
    agent_url = env["AGENT_URL"]

    @app.event("app_mention")
    def relay_mention(event: dict[str, Any], client: WebClient) -> None:
        bot, _, text = _MENTION.sub("", event["text"]).partition(" ")
        thread_ts = event.get("thread_ts") or event["ts"]
        session_key = f"slack:{event['channel']}:{thread_ts}:{bot}"
        answer = ask_agent(agent_url, bot, text, session_key)
        client.chat_postMessage(channel=event["channel"], thread_ts=thread_ts, text=answer)

    return app


def main() -> int:
    """Serve until the process is killed."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    env = dict(os.environ)
    app = create_app(env)
    server = make_server(env.get("HOST", "127.0.0.1"), int(env.get("PORT", "0")),
                         SlackRequestHandler(app), server_class=Server)  # fmt: skip
    host, port = server.server_address[:2]
    log.warning("listening on http://%s:%d/slack/events", host, port)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
