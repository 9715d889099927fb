from pathlib import Path

import pytest

from relay_plugin.config import Settings
from relay_plugin.errors import ConfigError

BASE = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "RELAY_DATA_DIR": "/tmp/x"}


def test_defaults():
    settings = Settings.from_env(BASE)
    assert settings.port == 3000
    assert settings.retry.retries == 3
    assert settings.retry.answer_timeout_s == 120.0
    assert settings.breaker.failures == 5
    assert settings.breaker.open_s == 30.0
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.data_dir == Path("/tmp/x")


def test_secrets_not_in_repr():
    settings = Settings.from_env({**BASE, "RELAY_TOKEN": "hunter2", "SLACK_BOT_TOKEN": "xoxb-secret"})
    assert "hunter2" not in repr(settings)
    assert "xoxb-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "name", "problem"),
    [
        ({"SLACK_SIGNING_SECRET": "s"}, "SLACK_BOT_TOKEN", "missing"),
        ({"SLACK_BOT_TOKEN": "xoxp-1", "SLACK_SIGNING_SECRET": "s"}, "SLACK_BOT_TOKEN", "xoxb-"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_SIGNING_SECRET", "missing"),
        ({**BASE, "PORT": "http"}, "PORT", "'http' is not a whole number"),
        ({**BASE, "PORT": "70000"}, "PORT", "out of range"),
        ({**BASE, "SLACK_API_URL": "slack.com/api"}, "SLACK_API_URL", "not an http"),
        ({**BASE, "RELAY_ANSWER_TIMEOUT_S": "-1"}, "RELAY_ANSWER_TIMEOUT_S", "out of range"),
        ({**BASE, "RELAY_RETRY_BASE_S": "nan"}, "RELAY_RETRY_BASE_S", "out of range"),
        ({**BASE, "RELAY_INSTANCE_NAME": "a b"}, "RELAY_INSTANCE_NAME", "invalid"),
        ({**BASE, "RELAY_EVENT_TTL_S": "60"}, "RELAY_EVENT_TTL_S", "at least 600"),
    ],
    ids=["no-token", "user-token", "no-secret", "port-text", "port-range", "api-url",
         "timeout", "nan", "instance", "event-ttl"],
)  # fmt: skip
def test_invalid_setting_names_variable(env, name, problem):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.name == name
    assert problem in str(caught.value)


def test_api_url_gets_trailing_slash():
    settings = Settings.from_env({**BASE, "SLACK_API_URL": "http://127.0.0.1:8000/api"})
    assert settings.slack_api_url == "http://127.0.0.1:8000/api/"


def test_bindings_tools_need_no_slack_settings():
    settings = Settings.from_env({"RELAY_DATA_DIR": "/tmp/y"}, require_slack=False)
    assert settings.data_dir == Path("/tmp/y")
