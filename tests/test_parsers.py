import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay_plugin.errors import InvalidBindingError, RelayPluginError
from relay_plugin.slack.commands import ParsedCommand, UsageError, parse_command
from relay_plugin.slack.mentions import Route, route_mention, session_key_for, task_id_for


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("", ParsedCommand("help")),
        ("LIST", ParsedCommand("list")),
        ("status", ParsedCommand("status")),
        ("unbind echo", ParsedCommand("unbind", bot="echo")),
        ("test echo", ParsedCommand("test", bot="echo")),
        ("bind echo http://127.0.0.1:9080", ParsedCommand("bind", "echo", "http://127.0.0.1:9080")),
        ("bind echo <https://b.example/relay|b.example/relay>",
         ParsedCommand("bind", "echo", "https://b.example/relay")),
        ("bind echo https://b.example dedupe=yes",
         ParsedCommand("bind", "echo", "https://b.example", {"dedupe": "yes"})),
    ],
)  # fmt: skip
def test_parse_command(text, parsed):
    assert parse_command(text) == parsed


@pytest.mark.parametrize(
    ("text", "error", "problem"),
    [
        ("bind echo", UsageError, "/relay bind <bot> <url>"),
        ("bind bad/name http://x", InvalidBindingError, "bad/name"),
        ("bind echo ftp://x", InvalidBindingError, "http or https"),
        ("bind echo http://x colour=red", InvalidBindingError, "dedupe=yes"),
        ("unbind", UsageError, "exactly one bot name"),
        ("list extra", UsageError, "takes no arguments"),
        ("frobnicate", UsageError, "Unknown action `frobnicate`"),
        ("x" * 5000, UsageError, "maximum is 4000"),
    ],
)  # fmt: skip
def test_parse_command_errors(text, error, problem):
    with pytest.raises(error, match=problem):
        parse_command(text)


@given(st.text(max_size=300))
def test_parse_command_never_crashes(text):
    try:
        parse_command(text)
    except RelayPluginError:
        pass


BOUND = ["echo", "security-bot"]


@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("<@U0RELAY> echo hello there", Route("echo", "hello there")),
        ("<@U0RELAY> echo: hello", Route("echo", "hello")),
        ("<@U0RELAY|relay> security-bot check <https://x.example|PR>", Route("security-bot", "check <https://x.example|PR>")),
        ("<@U0RELAY> ECHO hi", Route("echo", "hi")),
        ("<@U0RELAY> echo\nline two", Route("echo", "line two")),
    ],
)  # fmt: skip
def test_route_by_name(text, route):
    assert route_mention(text, "U0RELAY", BOUND) == route


def test_route_single_bot_gets_whole_text():
    assert route_mention("<@U0RELAY> what is up", "U0RELAY", ["echo"]) == Route("echo", "what is up")


def test_route_unknown_lists_bots():
    reply = route_mention("<@U0RELAY> nobody here", "U0RELAY", BOUND)
    assert reply == (
        "Which bot? Start with a bot name, e.g. `@relay echo hello`. "
        "Bound here: `echo`, `security-bot`."
    )


def test_route_no_bots():
    reply = route_mention("<@U0RELAY> hi", "U0RELAY", [])
    assert isinstance(reply, str)
    assert "/relay bind" in reply


def test_route_bot_without_text():
    reply = route_mention("<@U0RELAY> echo", "U0RELAY", BOUND)
    assert reply == "Nothing to send to *echo*: write the message after its name."


@given(st.text(max_size=200), st.lists(st.from_regex(r"[a-z]{1,5}", fullmatch=True), max_size=3))
def test_route_never_crashes(text, bound):
    result = route_mention(text, "U0RELAY", bound)
    assert isinstance(result, (Route, str))


def test_task_id_stable_and_distinct():
    first = task_id_for("T1", "C1", "1700000100.000200", "echo")
    assert first == task_id_for("T1", "C1", "1700000100.000200", "echo")
    assert first != task_id_for("T1", "C1", "1700000100.000200", "other")
    assert first != task_id_for("T1", "C1", "1700000100.000300", "echo")


def test_session_key_per_thread_and_bot():
    key = session_key_for("T1", "C1", "1700000100.000200", "echo")
    assert key == "slack:T1:C1:1700000100.000200:echo"


_names = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)
_hosts = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,6}){1,2}", fullmatch=True)


@given(_names, _hosts, st.integers(1, 65535), st.booleans())
def test_bind_command_round_trip(bot, host, port, wrapped):
    url = f"https://{host}:{port}/relay"
    typed = f"<{url}|{host}:{port}/relay>" if wrapped else url
    assert parse_command(f"bind {bot} {typed}") == ParsedCommand("bind", bot=bot, url=url)


@given(_names)
def test_route_round_trip(bot):
    assert route_mention(f"<@U0RELAY> {bot} hello", "U0RELAY", [bot, "zz-other"]) == Route(bot, "hello")


def test_bind_name_with_space_explained():
    with pytest.raises(UsageError, match="Bot names cannot contain spaces"):
        parse_command("bind bad name http://bots.example.com")
