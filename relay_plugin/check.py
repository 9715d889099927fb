"""``relay-plugin check``: validate the settings, then try Slack, the store and each bound endpoint.

Each finding is one line: ``ok``, ``note`` (worth knowing, not a failure) or ``PROBLEM`` with the
fix. A summary line follows, and the exit code is 0 when there is no problem and 1 otherwise.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from relay_plugin.config import Settings
from relay_plugin.core.endpoints import endpoint_key
from relay_plugin.core.guard import TargetGuard
from relay_plugin.core.policy import RetryPolicy
from relay_plugin.core.sender import new_client_session
from relay_plugin.core.store import BindingStore, BotBinding
from relay_plugin.errors import ConfigError, InvalidBindingError, StoreError

SLACK_TIMEOUT_S = 10.0
HEALTH_PATH = "/healthz"
# The bot scopes in manifest.yml, and what breaks without each.
REQUIRED_SCOPES = {
    "app_mentions:read": "mentions do not reach the app",
    "chat:write": "answers cannot be posted",
    "commands": "/relay does not work",
    "users:read": "user mentions show ids, and admins cannot be recognized",
    "channels:read": "the Home tab cannot list public channels, and /relay bind cannot tell "
    "whether the app is in the channel",
    "groups:read": "the Home tab cannot list private channels, and /relay bind cannot tell "
    "whether the app is in one",
}
_TOKEN_FIXES = {
    "invalid_auth": "copy the Bot User OAuth Token (xoxb-...) again from the app's OAuth & "
    "Permissions page into SLACK_BOT_TOKEN",
    "not_authed": "set SLACK_BOT_TOKEN to the app's Bot User OAuth Token (xoxb-...)",
    "token_revoked": "reinstall the app to the workspace and set SLACK_BOT_TOKEN to the new token",
    "account_inactive": "reinstall the app to the workspace and set SLACK_BOT_TOKEN to the new "
    "token",
}
_ENDPOINT_FIX = (
    "start the bot instance, or bind the bot to the right URL with /relay bind "
    "(or relay-plugin bindings add)"
)


@dataclass
class Report:
    """Findings printed as they come, and the count of problems."""

    out: TextIO
    problems: list[str] = field(default_factory=list)

    def ok(self, subject: str, text: str) -> None:
        """Print a passed check."""
        self._print("ok", subject, text)

    def note(self, subject: str, text: str) -> None:
        """Print something worth knowing that is not a failure."""
        self._print("note", subject, text)

    def problem(self, subject: str, text: str, fix: str = "") -> None:
        """Print and count a failed check, with what to do about it."""
        self.problems.append(subject)
        self._print("PROBLEM", subject, f"{text}. Fix: {fix}." if fix else f"{text}.")

    def finish(self) -> int:
        """Print the summary line and return the exit code."""
        if self.problems:
            count = len(self.problems)
            print(f"check failed: {count} problem{'s' if count > 1 else ''} found.", file=self.out)
            return 1
        print("check passed: no problems found.", file=self.out)
        return 0

    def _print(self, label: str, subject: str, text: str) -> None:
        print(f"{label:<8} {subject}: {text}", file=self.out, flush=True)


def run_check(env: Mapping[str, str], out: TextIO | None = None) -> int:
    """Run every check and return the exit code (0 healthy, 1 otherwise)."""
    return asyncio.run(check(env, Report(sys.stdout if out is None else out)))


async def check(env: Mapping[str, str], report: Report) -> int:
    """Check the settings, Slack, the store and the endpoints, in that order."""
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        report.problem("configuration", str(exc))
        report.note("checks", "Slack, the store and the endpoints are checked once the "
                    "settings are valid")  # fmt: skip
        return report.finish()
    report.ok("configuration", f"settings are valid; Slack API {settings.slack_api_url}")
    await check_slack(settings, report)
    bindings = check_store(settings, report)
    await check_endpoints(settings, bindings, report)
    return report.finish()


async def check_slack(settings: Settings, report: Report) -> None:
    """Call ``auth.test`` with the bot token and compare its scopes with the manifest's."""
    if settings.oauth:
        # NOTE: the installed workspaces' tokens are not tried.
        report.note("Slack", "OAuth mode: each workspace's bot token comes from its "
                    "installation in the store, so no single token is checked")  # fmt: skip
        return
    client = AsyncWebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url)
    try:
        async with asyncio.timeout(SLACK_TIMEOUT_S):
            response: Any = await client.auth_test()
    except SlackApiError as exc:
        error = str(exc.response.get("error"))
        fix = _TOKEN_FIXES.get(error, "check SLACK_BOT_TOKEN and SLACK_API_URL")
        report.problem("Slack", f"auth.test failed with {error}", fix)
        return
    except TimeoutError:
        report.problem(
            "Slack", f"auth.test got no answer from {settings.slack_api_url} within "
            f"{SLACK_TIMEOUT_S:g} s", "check SLACK_API_URL and this host's network",
        )  # fmt: skip
        return
    except aiohttp.ClientError as exc:
        report.problem("Slack", f"cannot reach {settings.slack_api_url}: {exc}",
                       "check SLACK_API_URL and this host's network")  # fmt: skip
        return
    report.ok("Slack", f"auth.test passed as {response.get('user')} ({response.get('user_id')}) "
              f"in {response.get('team')} ({response.get('team_id')})")  # fmt: skip
    granted = response.headers.get("x-oauth-scopes") if response.headers else None
    if granted is None:
        report.note("Slack scopes", "Slack listed no scopes for the token, so none are checked")
        return
    scopes = {scope.strip() for scope in str(granted).split(",")}
    for scope, effect in REQUIRED_SCOPES.items():
        if scope not in scopes:
            report.problem(
                f"Slack scope {scope}", f"the bot token lacks it, so {effect}",
                "add it to the app (see manifest.yml) and reinstall the app",
            )  # fmt: skip


def check_store(settings: Settings, report: Report) -> list[BotBinding]:
    """Open the binding store and return its bindings; a missing store is only a note."""
    path = settings.data_dir / BindingStore.FILE_NAME
    if not path.exists():
        report.note("store", f"{path} does not exist yet; relay-plugin serve creates it")
        return []
    try:
        with BindingStore(settings.data_dir) as store:
            bindings = list(store.all())
    except StoreError as exc:
        report.problem("store", str(exc))
        return []
    channels = len({(b.team_id, b.channel_id) for b in bindings})
    report.ok("store", f"{path} opened: {len(bindings)} binding(s) in {channels} channel(s)")
    return bindings


async def check_endpoints(settings: Settings, bindings: list[BotBinding], report: Report) -> None:
    """Probe ``/healthz`` at the origin of every bound endpoint, through the relay guard."""
    users: dict[str, list[str]] = defaultdict(list)
    for binding in bindings:
        users[health_url(binding.url)].append(f"{binding.bot} in {binding.channel_id}")
    if not users:
        report.note("endpoints", "no bots are bound, so no endpoint was probed")
        return
    guard = TargetGuard(settings.allowed_hosts)
    session = new_client_session(settings.retry, guard=guard)
    try:
        probes = [_probe(session, guard, settings.retry, url) for url in sorted(users)]
        results = await asyncio.gather(*probes)
    finally:
        await session.close()
        await guard.close()
    for url, (kind, text, fix) in zip(sorted(users), results, strict=True):
        shown = ", ".join(users[url][:3]) + (f" and {len(users[url]) - 3} more"
                                              if len(users[url]) > 3 else "")  # fmt: skip
        subject = f"endpoint {url} ({shown})"
        if kind == "ok":
            report.ok(subject, text)
        elif kind == "note":
            report.note(subject, text)
        else:
            report.problem(subject, text, fix)


def health_url(url: str) -> str:
    """Return the ``/healthz`` URL at the origin of a bot URL."""
    parts = urlsplit(endpoint_key(url))
    return urlunsplit((parts.scheme, parts.netloc, HEALTH_PATH, "", ""))


async def _probe(
    session: aiohttp.ClientSession, guard: TargetGuard, policy: RetryPolicy, url: str
) -> tuple[str, str, str]:
    """Return (kind, text, fix) for one ``GET /healthz``; kind is ok, note or problem."""
    try:
        # Host names are checked by the session's resolver, IP literals only here.
        guard.check_url(url)
    except InvalidBindingError as exc:
        return "problem", f"blocked: {exc.problem}", "fix the binding or RELAY_ALLOWED_HOSTS"
    started = time.monotonic()
    try:
        async with asyncio.timeout(policy.connect_timeout_s + policy.answer_timeout_s):
            async with session.get(url, allow_redirects=False) as response:
                status = response.status
    except InvalidBindingError as exc:  # raised by the guarded resolver
        return "problem", f"blocked: {exc.problem}", "fix the binding or RELAY_ALLOWED_HOSTS"
    except aiohttp.ConnectionTimeoutError:
        text = f"connecting timed out after {policy.connect_timeout_s:g} s"
        return "problem", text, _ENDPOINT_FIX
    except aiohttp.ClientConnectorDNSError as exc:
        return "problem", f"cannot resolve the host name: {exc.os_error}", _ENDPOINT_FIX
    except aiohttp.ClientConnectorError as exc:
        return "problem", f"cannot connect: {exc.os_error}", _ENDPOINT_FIX
    except TimeoutError:
        return "problem", f"no answer within {policy.answer_timeout_s:g} s", _ENDPOINT_FIX
    except aiohttp.ClientError as exc:
        return "problem", f"the request failed: {exc!r}", _ENDPOINT_FIX
    elapsed_ms = (time.monotonic() - started) * 1000
    if 200 <= status < 300:
        return "ok", f"{HEALTH_PATH} answered HTTP {status} in {elapsed_ms:.0f} ms", ""
    if status == 404:
        return "note", (f"no {HEALTH_PATH} (HTTP 404), but the instance answers HTTP; "
                        "use /relay test to try a relay"), ""  # fmt: skip
    return "problem", f"{HEALTH_PATH} answered HTTP {status}", "check the bot instance's logs"
