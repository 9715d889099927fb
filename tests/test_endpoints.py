import pytest

from relay_plugin.core.endpoints import endpoint_key, relay_url, validate_bot_name, validate_url
from relay_plugin.errors import InvalidBindingError


@pytest.mark.parametrize("name", ["echo", "security-bot", "a.b_c-9", "x" * 64])
def test_bot_name_valid(name):
    assert validate_bot_name(name) == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [("", "empty"), ("x" * 65, "maximum is 64"), ("bad name", "letters, digits"),
     ("bot/1", "letters, digits"), ("émoji", "letters, digits")],
)  # fmt: skip
def test_bot_name_invalid(name, problem):
    with pytest.raises(InvalidBindingError, match=problem):
        validate_bot_name(name)


@pytest.mark.parametrize(
    ("url", "problem"),
    [("", "empty"), ("ftp://x.example", "http or https"), ("bots.example.com", "http or https"),
     ("https://", "no host"), ("http://x:99999", "cannot be parsed"), ("http://x:0", "port 0"),
     ("https://" + "a" * 2050, "maximum is 2048")],
)  # fmt: skip
def test_url_invalid(url, problem):
    with pytest.raises(InvalidBindingError, match=problem):
        validate_url(url)


def test_url_error_names_value():
    with pytest.raises(InvalidBindingError, match="'ftp://x.example'"):
        validate_url("ftp://x.example")


@pytest.mark.parametrize(
    ("url", "expected"),
    [("http://h:9080", "http://h:9080/relay"), ("http://h:9080/", "http://h:9080/relay"),
     ("http://h/relay", "http://h/relay"), ("http://h/api/agent?x=1", "http://h/api/agent?x=1")],
)  # fmt: skip
def test_relay_url(url, expected):
    assert relay_url(url) == expected


def test_endpoint_key_normalizes():
    assert endpoint_key("HTTPS://Bots.Example.com:443/") == "https://bots.example.com/relay"
    assert endpoint_key("https://bots.example.com/relay#x") == "https://bots.example.com/relay"


def test_endpoint_key_keeps_distinct_ports():
    assert endpoint_key("http://h:1/") != endpoint_key("http://h:2/")


def test_endpoint_key_ipv6():
    assert endpoint_key("http://[::1]:8080") == "http://[::1]:8080/relay"


def test_url_with_credentials_rejected_without_echoing_them():
    with pytest.raises(InvalidBindingError) as caught:
        validate_url("https://user:hunter2@bots.example.com/relay")
    assert "hunter2" not in str(caught.value)
    assert "remove the user name and password" in str(caught.value)
