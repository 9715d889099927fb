"""Settings read once from the environment into a frozen, typed value."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import platformdirs

from relay_plugin.core.guard import HostAllowList
from relay_plugin.core.policy import BreakerPolicy, FairUsePolicy, RetryPolicy
from relay_plugin.errors import ConfigError
from relay_plugin.logs import LOG_FORMATS

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
BIND_POLICIES = ("admins", "everyone")
_INSTANCE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
# Bolt's default path of the OAuth redirect, which the app serves.
OAUTH_REDIRECT_PATH = "/slack/oauth_redirect"
MIN_STATE_SECRET_CHARS = 16


def default_data_dir() -> Path:
    """Return the per-user data folder used when RELAY_DATA_DIR is not set."""
    return Path(platformdirs.user_data_dir("relay-plugin", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Everything the plugin reads from its environment. Secrets are kept out of ``repr``."""

    data_dir: Path
    slack_bot_token: str = field(default="", repr=False)
    slack_signing_secret: str = field(default="", repr=False)
    slack_app_token: str = field(default="", repr=False)
    slack_client_id: str = ""
    slack_client_secret: str = field(default="", repr=False)
    slack_state_secret: str = field(default="", repr=False)
    slack_redirect_uri: str = ""
    slack_api_url: str = DEFAULT_SLACK_API_URL
    host: str = "0.0.0.0"
    port: int = 3000
    relay_token: str = field(default="", repr=False)
    instance_name: str = "slack-relay"
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
    fair_use: FairUsePolicy = FairUsePolicy()
    bind_policy: str = "admins"
    admin_users: frozenset[str] = frozenset()
    max_content_bytes: int = 40 * 1024
    max_answer_chars: int = 100_000
    public_url: str = ""
    status_interval_s: float = 3.0
    async_timeout_s: float = 3600.0
    shutdown_grace_s: float = 30.0
    event_ttl_s: float = 900.0
    log_level: str = "INFO"
    log_format: str = "text"
    allowed_hosts: HostAllowList = HostAllowList()

    @property
    def socket_mode(self) -> bool:
        """Whether Slack delivers events over Socket Mode (SLACK_APP_TOKEN is set) instead of HTTP."""
        return bool(self.slack_app_token)

    @property
    def oauth(self) -> bool:
        """Whether workspaces install the app through OAuth (SLACK_CLIENT_ID and co. are set)."""
        return bool(self.slack_client_id)

    @property
    def slack_authorize_url(self) -> str:
        """Slack's OAuth authorize page, ``/oauth/v2/authorize`` beside SLACK_API_URL's ``/api/``."""
        return urljoin(self.slack_api_url, "../oauth/v2/authorize")

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, require_slack: bool = True) -> Settings:
        """Build settings from ``env``; a missing or malformed value raises ConfigError."""
        reader = _Reader(env)
        bot_token = reader.text("SLACK_BOT_TOKEN")
        signing_secret = reader.text("SLACK_SIGNING_SECRET")
        app_token = reader.text("SLACK_APP_TOKEN")
        client_id, client_secret, state_secret = reader.oauth_credentials(check=require_slack)
        if client_id:
            bot_token = ""  # each workspace's bot token comes from its installation
        if require_slack and not client_id:
            if not bot_token:
                raise ConfigError(
                    "SLACK_BOT_TOKEN",
                    "missing; set it to the app's Bot User OAuth Token (xoxb-...) from the "
                    "OAuth & Permissions page, or set SLACK_CLIENT_ID, SLACK_CLIENT_SECRET and "
                    "SLACK_STATE_SECRET to install the app into workspaces through OAuth",
                )
            if not bot_token.startswith("xoxb-"):
                raise ConfigError(
                    "SLACK_BOT_TOKEN", "malformed; a bot token starts with 'xoxb-'"
                )
        if require_slack:
            if app_token and not app_token.startswith("xapp-"):
                raise ConfigError(
                    "SLACK_APP_TOKEN",
                    "malformed; an app-level token starts with 'xapp-' (Basic Information page, "
                    "App-Level Tokens, with the connections:write scope)",
                )
            # Socket Mode deliveries are not signed, so only HTTP mode needs the signing secret.
            if not signing_secret and not app_token:
                raise ConfigError(
                    "SLACK_SIGNING_SECRET",
                    "missing; set it to the Signing Secret from the app's Basic Information page, "
                    "or set SLACK_APP_TOKEN to receive events over Socket Mode",
                )
        retry = RetryPolicy(
            retries=reader.integer("RELAY_RETRIES", 3, minimum=0, maximum=10),
            base_s=reader.number("RELAY_RETRY_BASE_S", 1.0, minimum=0.0, maximum=60.0),
            jitter=reader.number("RELAY_RETRY_JITTER", 0.1, minimum=0.0, maximum=1.0),
            retry_after_max_s=reader.number("RELAY_RETRY_AFTER_MAX_S", 30.0, minimum=0.0),
            connect_timeout_s=reader.number("RELAY_CONNECT_TIMEOUT_S", 5.0, minimum=0.001),
            answer_timeout_s=reader.number("RELAY_ANSWER_TIMEOUT_S", 120.0, minimum=0.001),
        )
        breaker = BreakerPolicy(
            failures=reader.integer("RELAY_BREAKER_FAILURES", 5, minimum=1, maximum=1000),
            open_s=reader.number("RELAY_BREAKER_OPEN_S", 30.0, minimum=0.001),
        )
        fair_use = FairUsePolicy(
            user_in_flight=reader.integer("RELAY_USER_IN_FLIGHT", 3, minimum=0, maximum=10_000),
            user_per_minute=reader.integer("RELAY_USER_PER_MINUTE", 20, minimum=0, maximum=100_000),
            channel_in_flight=reader.integer("RELAY_CHANNEL_IN_FLIGHT", 10, minimum=0, maximum=10_000),
            channel_per_minute=reader.integer(
                "RELAY_CHANNEL_PER_MINUTE", 60, minimum=0, maximum=100_000
            ),
            endpoint_concurrency=reader.integer(
                "RELAY_ENDPOINT_CONCURRENCY", 8, minimum=1, maximum=10_000
            ),
            endpoint_queue=reader.integer("RELAY_ENDPOINT_QUEUE", 100, minimum=0, maximum=100_000),
            thread_budget=reader.integer("RELAY_THREAD_BUDGET", 50, minimum=0, maximum=100_000),
        )
        return cls(
            data_dir=reader.path("RELAY_DATA_DIR", default_data_dir()),
            slack_bot_token=bot_token,
            slack_signing_secret=signing_secret,
            slack_app_token=app_token,
            slack_client_id=client_id,
            slack_client_secret=client_secret,
            slack_state_secret=state_secret,
            slack_redirect_uri=reader.redirect_uri(client_id),
            slack_api_url=reader.api_url("SLACK_API_URL", DEFAULT_SLACK_API_URL),
            host=reader.text("HOST") or "0.0.0.0",
            port=reader.integer("PORT", 3000, minimum=0, maximum=65535),
            relay_token=reader.text("RELAY_TOKEN"),
            instance_name=reader.instance_name("RELAY_INSTANCE_NAME", "slack-relay"),
            retry=retry,
            breaker=breaker,
            fair_use=fair_use,
            bind_policy=reader.choice("RELAY_BIND_POLICY", BIND_POLICIES),
            admin_users=reader.user_ids("RELAY_ADMIN_USERS"),
            max_content_bytes=reader.integer(
                "RELAY_MAX_CONTENT_BYTES", 40 * 1024, minimum=1, maximum=10 * 1024 * 1024
            ),
            max_answer_chars=reader.integer(
                "RELAY_MAX_ANSWER_CHARS", 100_000, minimum=1_000, maximum=2_000_000
            ),
            public_url=reader.public_url("RELAY_PUBLIC_URL"),
            status_interval_s=reader.number("RELAY_STATUS_INTERVAL_S", 3.0, minimum=0.1),
            async_timeout_s=reader.number("RELAY_ASYNC_TIMEOUT_S", 3600.0, minimum=1.0),
            shutdown_grace_s=reader.number("RELAY_SHUTDOWN_GRACE_S", 30.0, minimum=0.0),
            event_ttl_s=reader.number("RELAY_EVENT_TTL_S", 900.0, minimum=600.0),
            log_level=reader.log_level("RELAY_LOG_LEVEL", "INFO"),
            log_format=reader.choice("RELAY_LOG_FORMAT", LOG_FORMATS),
            allowed_hosts=HostAllowList.parse(reader.text("RELAY_ALLOWED_HOSTS")),
        )


class _Reader:
    """Typed access to an environment mapping; every error names the variable and the fix."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str) -> str:
        return self._env.get(name, "").strip()

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        raw = self.text(name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"{raw!r} is not a whole number") from None
        if not minimum <= value <= maximum:
            raise ConfigError(name, f"{value} is out of range; use {minimum} to {maximum}")
        return value

    def number(
        self, name: str, default: float, *, minimum: float, maximum: float = math.inf
    ) -> float:
        raw = self.text(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"{raw!r} is not a number") from None
        if not math.isfinite(value) or not minimum <= value <= maximum:
            upper = "" if maximum == math.inf else f" and at most {maximum:g}"
            raise ConfigError(name, f"{raw} is out of range; use at least {minimum:g}{upper}")
        return value

    def path(self, name: str, default: Path) -> Path:
        raw = self.text(name)
        return Path(raw).expanduser() if raw else default

    def api_url(self, name: str, default: str) -> str:
        raw = self.text(name)
        if not raw:
            return default
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                name, f"{raw!r} is not an http(s) URL; the default is {DEFAULT_SLACK_API_URL}"
            )
        return raw if raw.endswith("/") else raw + "/"

    def public_url(self, name: str) -> str:
        raw = self.text(name)
        if not raw:
            return ""
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise ConfigError(
                name, f"{raw!r} is not an http(s) base URL; give the app's public address, "
                "e.g. https://relay.example.com",
            )  # fmt: skip
        return raw.rstrip("/")

    def instance_name(self, name: str, default: str) -> str:
        raw = self.text(name)
        if not raw:
            return default
        if not _INSTANCE_NAME.match(raw):
            raise ConfigError(
                name, f"{raw!r} is invalid; use 1-64 letters, digits, '-', '_' or '.'"
            )
        return raw

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        raw = self.text(name).lower()
        if not raw:
            return allowed[0]
        if raw not in allowed:
            raise ConfigError(name, f"{raw!r} is not one of {', '.join(allowed)}")
        return raw

    def user_ids(self, name: str) -> frozenset[str]:
        ids = [part.strip() for part in self.text(name).split(",") if part.strip()]
        for user_id in ids:
            if not _USER_ID.match(user_id):
                raise ConfigError(
                    name, f"{user_id!r} is not a Slack user id; list ids like U0123ABCD, comma-separated"
                )
        return frozenset(ids)

    def oauth_credentials(self, *, check: bool) -> tuple[str, str, str]:
        """Return SLACK_CLIENT_ID, SLACK_CLIENT_SECRET and SLACK_STATE_SECRET: all three or none."""
        names = ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "SLACK_STATE_SECRET")
        values = {name: self.text(name) for name in names}
        missing = [name for name, value in values.items() if not value]
        if not check or len(missing) == len(names):
            return "", "", ""
        if missing:
            raise ConfigError(
                missing[0],
                f"missing; OAuth installation needs {', '.join(names)} together, and "
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set. Copy the "
                "Client ID and Client Secret from the app's Basic Information page and set "
                "SLACK_STATE_SECRET to a long random string, or unset all three and set "
                "SLACK_BOT_TOKEN",
            )
        client_id, client_secret, state_secret = values.values()
        if len(state_secret) < MIN_STATE_SECRET_CHARS:
            raise ConfigError(
                "SLACK_STATE_SECRET",
                f"too short ({len(state_secret)} characters); use at least "
                f"{MIN_STATE_SECRET_CHARS} random characters, e.g. the output of "
                "`openssl rand -hex 32`",
            )
        return client_id, client_secret, state_secret

    def redirect_uri(self, client_id: str) -> str:
        """Return SLACK_REDIRECT_URI in OAuth mode; "" lets Slack use the app's Redirect URL."""
        raw = self.text("SLACK_REDIRECT_URI")
        if not client_id or not raw:
            return ""
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            raise ConfigError(
                "SLACK_REDIRECT_URI",
                f"{raw!r} is not an http(s) URL; give the Redirect URL listed on the app's "
                f"OAuth & Permissions page, e.g. https://relay.example.com{OAUTH_REDIRECT_PATH}",
            )
        return raw

    def log_level(self, name: str, default: str) -> str:
        raw = self.text(name).upper()
        if not raw:
            return default
        if raw not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(name, f"{raw!r} is not one of DEBUG, INFO, WARNING, ERROR")
        return raw
