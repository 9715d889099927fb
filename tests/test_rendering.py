import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay_plugin.errors import CircuitOpenError, RemoteHTTPError, RemoteTimeoutError
from relay_plugin.slack.rendering import (
    MARKDOWN_BLOCK_MAX,
    answer_payloads,
    failure_line,
    failure_payload,
    split_markdown,
)


def test_short_answer_one_payload():
    payloads = answer_payloads("echo", "**hi**", elapsed_s=0.2, status="completed")
    assert len(payloads) == 1
    assert payloads[0]["blocks"][0] == {"type": "markdown", "text": "**hi**"}


def test_answer_text_fallback_escaped():
    payloads = answer_payloads("echo", "a < b & c", elapsed_s=0.2, status="completed")
    assert payloads[0]["text"] == "echo: a &lt; b &amp; c"


def test_answer_does_not_ping():
    payload = answer_payloads("echo", "<!channel> look <@U0001>", elapsed_s=0, status="completed")[0]
    assert "<!channel>" not in payload["blocks"][0]["text"]
    assert "<@U0001>" not in payload["blocks"][0]["text"]
    assert "<!channel>" not in payload["text"]


def test_empty_answer_says_so():
    payload = answer_payloads("echo", "", elapsed_s=0, status="ok")[0]
    assert "sent no answer text" in payload["blocks"][0]["text"]


def test_long_answer_split_into_parts():
    paragraphs = ["word " * 400] * 20  # about 40,000 characters
    payloads = answer_payloads("echo", "\n\n".join(paragraphs), elapsed_s=1, status="completed")
    assert len(payloads) == 4
    assert all(len(p["blocks"][0]["text"]) <= MARKDOWN_BLOCK_MAX for p in payloads)
    assert "part 1 of 4" in payloads[0]["blocks"][1]["elements"][0]["text"]


def test_split_keeps_code_fences_balanced():
    code = "```python\n" + "\n".join(f"line_{i} = {i}" for i in range(200)) + "\n```"
    chunks = split_markdown("intro\n\n" + code + "\n\noutro", limit=500)
    assert len(chunks) > 2
    for chunk in chunks:
        assert chunk.count("```") % 2 == 0


def test_split_keeps_every_line():
    code = "```\n" + "\n".join(f"row {i}" for i in range(300)) + "\n```"
    chunks = split_markdown(code, limit=200)
    rows = [line for chunk in chunks for line in chunk.split("\n") if line.startswith("row ")]
    assert rows == [f"row {i}" for i in range(300)]


def test_split_cuts_overlong_line():
    chunks = split_markdown("x" * 1000, limit=300)
    assert "".join(chunks) == "x" * 1000
    assert max(len(c) for c in chunks) <= 300


def test_split_rejects_tiny_limit():
    with pytest.raises(ValueError, match="at least 64"):
        split_markdown("x", limit=10)


@settings(max_examples=200)
@given(st.text(alphabet=st.sampled_from("ab `~\n#*-|"), max_size=2000), st.integers(64, 400))
def test_split_never_exceeds_limit_or_loses_text(text, limit):
    chunks = split_markdown(text, limit=limit)
    assert all(len(chunk) <= limit for chunk in chunks)
    kept = "".join("".join(chunks).split())
    original = "".join(text.split())
    # Fences added to reopen a cut code block are the only extra characters.
    assert kept.replace("`", "").replace("~", "") == original.replace("`", "").replace("~", "")


def test_failure_lines_name_cause():
    open_error = CircuitOpenError(url="http://h/relay", retry_in=12.2)
    timeout = RemoteTimeoutError("no answer within 120 s", url="http://h/relay", attempts=1)
    http = RemoteHTTPError("HTTP 503 after 4 attempts", url="http://h/relay", attempts=4, status=503)
    assert "next try is allowed in 12 s" in failure_line("echo", open_error)
    assert "did not answer in time" in failure_line("echo", timeout)
    assert "HTTP 503" in failure_line("echo", http)


def test_failure_payload_carries_task_id():
    error = RemoteTimeoutError("no answer", url="http://h/relay", attempts=1)
    payload = failure_payload("echo", error, "task-123")
    assert "task-123" in payload["blocks"][1]["elements"][0]["text"]


def test_failure_line_probe_in_progress():
    line = failure_line("echo", CircuitOpenError(url="http://h/relay", retry_in=0.0))
    assert "probe request is checking" in line
    assert "0 s" not in line
