import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay_plugin.core.protocol import (
    GO_ZERO_TIME,
    RelayBinding,
    RelayMessage,
    RelayResponse,
    TaskStatus,
    format_time,
    parse_time,
)
from relay_plugin.errors import ProtocolError

HOTPLEX_STUB = b'{"task_id":"","status":"ok","timestamp":"0001-01-01T00:00:00Z","duration":0}'


def test_message_sends_text_in_content_and_message():
    message = RelayMessage(task_id="t1", from_="slack-relay", to="echo", content="hello")
    body = message.to_dict()
    assert body["content"] == "hello"
    assert body["message"] == "hello"
    assert body["from"] == "slack-relay"


def test_message_omits_empty_fields():
    body = RelayMessage(task_id="t1", from_="a", to="b", content="c").to_dict()
    assert "session_key" not in body
    assert "status" not in body
    assert "created_at" not in body


def test_message_created_at_is_rfc3339_with_zone():
    created = datetime(2026, 12, 4, 19, 53, 41, 123456, tzinfo=timezone.utc)
    body = RelayMessage(task_id="t", from_="a", to="b", content="c", created_at=created).to_dict()
    assert body["created_at"] == "2026-12-04T19:53:41.123456Z"


def test_message_decodes_hotplex_message_field():
    decoded = RelayMessage.from_dict({"from": "a", "to": "b", "message": "hi", "session_key": "s"})
    assert decoded.content == "hi"
    assert decoded.session_key == "s"


def test_message_rejects_unknown_status():
    with pytest.raises(ProtocolError, match="unknown task status 'done'"):
        RelayMessage.from_dict({"task_id": "t", "status": "done"})


def test_response_accepts_hotplex_stub():
    response = RelayResponse.from_body(HOTPLEX_STUB)
    assert response.status == "ok"
    assert response.task_id == ""
    assert response.timestamp == GO_ZERO_TIME
    assert not response.failed


def test_response_duration_is_go_nanoseconds():
    body = json.dumps({"task_id": "t", "status": "completed", "duration": 1_500_000_000})
    response = RelayResponse.from_body(body.encode())
    assert response.duration == timedelta(seconds=1.5)


def test_response_ignores_unknown_fields():
    body = b'{"task_id":"t","status":"completed","content":"x","extra":{"a":1}}'
    assert RelayResponse.from_body(body).content == "x"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"<html><body>502 Bad Gateway</body></html>", "HTML page"),
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "JSON object, not list"),
        (b'{"status": 3}', "'status' must be a string"),
        (b'{"status": "completed", "duration": "5s"}', "nanoseconds"),
        (b'{"status": "completed", "duration": true}', "nanoseconds"),
        (b'{"status": "completed", "timestamp": "yesterday"}', "RFC 3339"),
        (b'{"task_id": "t"}', "'status' is missing"),
        (b"\xff\xfe{}", "UTF-8"),
    ],
    ids=["empty", "blank", "html", "garbage", "list", "status-type", "duration-text",
         "duration-bool", "timestamp", "no-status", "bad-utf8"],
)  # fmt: skip
def test_response_rejects_non_response(body, problem):
    with pytest.raises(ProtocolError, match=problem):
        RelayResponse.from_body(body, "text/html")


def test_response_error_carries_excerpt():
    with pytest.raises(ProtocolError) as caught:
        RelayResponse.from_body(b"<html>proxy error</html>")
    assert caught.value.excerpt == "<html>proxy error</html>"


def test_response_round_trip():
    original = RelayResponse(
        task_id="t",
        status=TaskStatus.COMPLETED,
        content="answer",
        timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        duration_ns=42,
    )
    assert RelayResponse.from_body(json.dumps(original.to_dict()).encode()) == original


def test_parse_time_go_nanoseconds_and_offset():
    parsed = parse_time("2026-12-04T19:53:41.123456789+08:00")
    assert parsed.microsecond == 123456
    assert parsed.utcoffset() == timedelta(hours=8)


def test_parse_time_rejects_missing_zone():
    with pytest.raises(ValueError, match="with a zone"):
        parse_time("2026-12-04T19:53:41")


def test_format_time_rejects_naive():
    with pytest.raises(ValueError, match="naive"):
        format_time(datetime(2026, 1, 1))


def test_binding_round_trip_keeps_team():
    binding = RelayBinding("slack", "C1", {"echo": "http://127.0.0.1:9"}, team_id="T1")
    assert RelayBinding.from_dict(binding.to_dict()) == binding


def test_binding_rejects_non_string_urls():
    with pytest.raises(ProtocolError, match="'bots'"):
        RelayBinding.from_dict({"chat_id": "C1", "bots": {"echo": 5}})


@given(st.binary(max_size=300))
def test_response_decoder_never_crashes(body):
    try:
        RelayResponse.from_body(body)
    except ProtocolError:
        pass


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["task_id", "status", "content", "duration",
                                       "timestamp", "error", "x"]), children, max_size=6),
    max_leaves=12,
)  # fmt: skip


@given(_json)
def test_response_decoder_never_crashes_on_json(value):
    try:
        RelayResponse.from_dict(value)
    except ProtocolError:
        pass


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-5)),
                                   timezone(timedelta(hours=5, minutes=30))]),
    )
)  # fmt: skip
def test_time_round_trip(value):
    assert parse_time(format_time(value)) == value
