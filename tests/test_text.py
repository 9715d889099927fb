import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay_plugin.slack.text import (
    decode_entities,
    decode_slack_text,
    defuse_mentions,
    escape_text,
    strip_user_mention,
    unlabeled_user_ids,
    unwrap_link,
)


@pytest.mark.parametrize(
    ("slack", "meant"),
    [
        ("a &amp; b &lt;c&gt;", "a & b <c>"),
        ("&amp;lt;", "&lt;"),
        ("<@U0002|bob> look", "@bob look"),
        ("<@U0003> look", "@carol look"),
        ("<@U0009>", "@U0009"),
        ("<#C0002|backend>", "#backend"),
        ("<#C0002>", "#C0002"),
        ("<https://example.com/a?b=1&amp;c=2>", "https://example.com/a?b=1&c=2"),
        ("<https://github.com/acme/app/pull/42|PR 42>", "PR 42 (https://github.com/acme/app/pull/42)"),
        ("<https://example.com|example.com>", "https://example.com"),
        ("<mailto:a@example.com|a@example.com>", "a@example.com"),
        ("<!here> <!channel> <!everyone>", "@here @channel @everyone"),
        ("<!subteam^S0001|@oncall>", "@oncall"),
        ("<!subteam^S0001>", "@S0001"),
        ("<!date^1700000000^{date}|Nov 14>", "Nov 14"),
    ],
)  # fmt: skip
def test_decode(slack, meant):
    assert decode_slack_text(slack, users={"U0003": "carol"}) == meant


def test_strip_own_mention_everywhere():
    text = "<@U0RELAY> echo hi <@U0RELAY|relay> there"
    assert strip_user_mention(text, "U0RELAY") == "echo hi   there"


def test_strip_keeps_other_mentions():
    assert strip_user_mention("<@U0RELAY> ask <@U0002>", "U0RELAY") == "ask <@U0002>"


def test_unlabeled_user_ids():
    assert unlabeled_user_ids("<@U1> <@U2|bob> <@W3>") == {"U1", "W3"}


@pytest.mark.parametrize(
    ("text", "url"),
    [("<https://x.example/relay|x.example/relay>", "https://x.example/relay"),
     ("<http://127.0.0.1:9080>", "http://127.0.0.1:9080"),
     ("https://x.example", "https://x.example"),
     ("<https://x.example/?a=1&amp;b=2>", "https://x.example/?a=1&b=2")],
)  # fmt: skip
def test_unwrap_link(text, url):
    assert unwrap_link(text) == url


@pytest.mark.parametrize(
    ("answer", "defused"),
    [("hi <!channel>", "hi @channel"), ("<!here|here>", "@here"), ("ping <@U0001>", "ping @U0001"),
     ("<!subteam^S1|@team>", "@team"), ("<https://x.example|x>", "<https://x.example|x>")],
)  # fmt: skip
def test_defuse_mentions(answer, defused):
    assert defuse_mentions(answer) == defused


@given(st.text())
def test_escape_round_trip(text):
    assert decode_entities(escape_text(text)) == text


@given(st.text())
def test_escaped_text_has_no_markup(text):
    assert "<" not in escape_text(text)


@given(st.text(alphabet=st.sampled_from("<>@!#|&;^ amphltgUC01:/.\n"), max_size=80))
def test_decode_never_crashes(text):
    assert isinstance(decode_slack_text(text), str)


@given(st.text(alphabet=st.sampled_from("<>@!#|&;^ amphltgUC01:/.\nherchnl"), max_size=80))
def test_defused_answer_has_no_broadcast(text):
    defused = defuse_mentions(text)
    for token in ("<!here", "<!channel", "<!everyone", "<@U"):
        assert token not in defused
