from relay_plugin.core.callback_auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, signed_headers, verify

BODY = b'{"task_id":"t","status":"completed"}'


def test_signed_report_accepted():
    headers = signed_headers("k", BODY, now=1_700_000_000)
    assert verify("k", headers, BODY, now=1_700_000_010) == ""


def test_wrong_key_rejected():
    headers = signed_headers("other", BODY, now=1_700_000_000)
    assert verify("k", headers, BODY, now=1_700_000_000) == "wrong signature"


def test_changed_body_rejected():
    headers = signed_headers("k", BODY, now=1_700_000_000)
    assert verify("k", headers, BODY + b" ", now=1_700_000_000) == "wrong signature"


def test_old_signature_rejected():
    headers = signed_headers("k", BODY, now=1_700_000_000)
    assert "more than 300 s" in verify("k", headers, BODY, now=1_700_000_400)


def test_bearer_accepted_and_wrong_bearer_rejected():
    assert verify("k", {"Authorization": "Bearer k"}, BODY) == ""
    assert verify("k", {"Authorization": "Bearer x"}, BODY) == "wrong bearer token"


def test_no_key_rejects_everything():
    headers = signed_headers("", BODY)
    assert "no token is set" in verify("", headers, BODY)


def test_missing_headers_named():
    reason = verify("k", {}, BODY)
    assert TIMESTAMP_HEADER in reason
    assert SIGNATURE_HEADER in reason


def test_signature_format():
    assert sign("k", 1, b"x").startswith("v0=")
    assert len(sign("k", 1, b"x")) == 67
