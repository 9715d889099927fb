"""Bot names and endpoint URLs: validation, the relay URL, and the breaker key."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from relay_plugin.errors import InvalidBindingError

BOT_NAME_MAX = 64
URL_MAX = 2048
_BOT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def validate_bot_name(name: str) -> str:
    """Return ``name`` if it is a valid bot name, else raise InvalidBindingError."""
    if not name:
        raise InvalidBindingError("bot name", name, "it is empty")
    if len(name) > BOT_NAME_MAX:
        raise InvalidBindingError(
            "bot name", name, f"it has {len(name)} characters; the maximum is {BOT_NAME_MAX}"
        )
    if not _BOT_NAME.match(name):
        raise InvalidBindingError(
            "bot name", name, "use only letters, digits, '-', '_' and '.'"
        )
    return name


def validate_url(url: str) -> str:
    """Return ``url`` stripped if it is an http(s) URL with a host, else raise InvalidBindingError."""
    url = url.strip()
    if not url:
        raise InvalidBindingError("URL", url, "it is empty; give the bot instance's http(s) URL")
    if len(url) > URL_MAX:
        raise InvalidBindingError(
            "URL", url, f"it has {len(url)} characters; the maximum is {URL_MAX}"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidBindingError("URL", url, f"it cannot be parsed ({exc})") from None
    if parts.scheme.lower() not in _DEFAULT_PORTS:
        raise InvalidBindingError(
            "URL", url, "the scheme must be http or https, e.g. https://bots.example.com:9080"
        )
    if not parts.hostname:
        raise InvalidBindingError("URL", url, "it has no host name")
    if parts.username is not None or parts.password is not None:
        shown = url.replace(parts.netloc, "***@" + parts.netloc.rpartition("@")[2], 1)
        raise InvalidBindingError(
            "URL",
            shown,
            "remove the user name and password; give a bearer token with the bind's token "
            "option or RELAY_TOKEN instead",
        )
    if port == 0:
        raise InvalidBindingError("URL", url, "port 0 is not a valid port")
    if any(ch.isspace() for ch in url):
        raise InvalidBindingError("URL", url, "it contains white space")
    return url


def relay_url(url: str) -> str:
    """Return the URL to POST relays to.

    A URL with an empty path or ``/`` is an instance base URL, and HotPlex's sender appends
    ``/relay`` to it. Any other path is used as given.
    """
    parts = urlsplit(url)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/relay")
    return urlunsplit(parts)


def endpoint_key(url: str) -> str:
    """Return the normalized relay URL that identifies an endpoint (and its circuit breaker).

    Scheme and host are lower-cased, a default port is dropped, the fragment is dropped, and the
    base-URL rule of :func:`relay_url` is applied, so ``HTTPS://Bots.Example.com:443/`` and
    ``https://bots.example.com/relay`` are one endpoint.
    """
    parts = urlsplit(relay_url(url))
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path, parts.query, ""))
