"""Exceptions of the relay plugin.

Every error keeps its facts as attributes. ``str(error)`` is the full text for logs;
``user_message`` is the short line shown to a Slack user.

    RelayPluginError
    ├── ConfigError              a setting is missing or malformed
    ├── StoreError               the binding store cannot be used
    │   ├── StoreCorruptError        the file is not a store we can read
    │   └── StoreVersionError        the file was written by a newer version
    ├── BindingError             a binding request is invalid
    │   ├── InvalidBindingError      bad bot name, URL or option
    │   │   └── TargetNotAllowedError    the URL's host has no allowed address
    │   └── BotNotBoundError         no such bot in the channel
    ├── ProtocolError            an answer is not a RelayResponse
    └── RelayError               a relay failed
        ├── CircuitOpenError         the endpoint's breaker is open (nothing was sent)
        ├── RemoteTimeoutError       connect or answer timeout
        ├── RemoteUnreachableError   connection refused, DNS failure, reset
        ├── RemoteHTTPError          the remote answered a non-2xx status
        ├── BadAnswerError           a 2xx answer that is not a RelayResponse
        ├── RemoteTaskError          the remote answered, and reports the task failed
        ├── EndpointBusyError        too many relays to one endpoint are running and waiting
        └── TargetBlockedError       the host resolves only to addresses that are not allowed
"""

from __future__ import annotations


class RelayPluginError(Exception):
    """Base class of every error the plugin raises on purpose."""

    @property
    def user_message(self) -> str:
        """Short text for a Slack user."""
        return str(self)


class ConfigError(RelayPluginError):
    """A setting is missing or malformed."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


class StoreError(RelayPluginError):
    """The binding store cannot be used."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"binding store {path}: {problem}")
        self.path = path
        self.problem = problem


class StoreCorruptError(StoreError):
    """The store file exists but is not a store this program can read."""


class StoreVersionError(StoreError):
    """The store file has a schema version this program does not know."""


class BindingError(RelayPluginError):
    """A binding request is invalid."""


class InvalidBindingError(BindingError):
    """A bot name, URL or binding option is invalid."""

    def __init__(self, field: str, value: str, problem: str) -> None:
        shown = value if len(value) <= 80 else value[:77] + "..."
        super().__init__(f"invalid {field} {shown!r}: {problem}")
        self.field = field
        self.value = value
        self.problem = problem


class TargetNotAllowedError(InvalidBindingError):
    """A bot URL's host is, or resolves only to, addresses that relays must not connect to.

    ``blocked`` lists (address, reason) pairs, e.g. ``("10.0.0.5", "a private address")``.
    ``value`` is the URL, or the host alone when the error comes from a lookup at send time.
    """

    def __init__(self, value: str, host: str, blocked: list[tuple[str, str]]) -> None:
        if len(blocked) == 1:
            address, reason = blocked[0]
            if address == host:
                summary = f"{host} is {reason}"
            else:
                summary = f"{host} resolves to {address}, {reason}"
        else:
            listing = ", ".join(f"{address} ({reason})" for address, reason in blocked[:4])
            more = f" and {len(blocked) - 4} more" if len(blocked) > 4 else ""
            summary = f"{host} resolves only to disallowed addresses: {listing}{more}"
        super().__init__(
            "URL",
            value,
            f"{summary}; if this host is meant to be reachable, add it to RELAY_ALLOWED_HOSTS",
        )
        self.host = host
        self.blocked = blocked


class BotNotBoundError(BindingError):
    """No bot of that name is bound in the channel."""

    def __init__(self, bot: str, channel: str, bound: list[str]) -> None:
        listing = ", ".join(bound) if bound else "none"
        super().__init__(f"no bot named {bot!r} is bound in {channel} (bound here: {listing})")
        self.bot = bot
        self.channel = channel
        self.bound = bound

    @property
    def user_message(self) -> str:
        listing = ", ".join(f"*{name}*" for name in self.bound) if self.bound else "none"
        return f"No bot named *{self.bot}* is bound in this channel (bound here: {listing})."


class ProtocolError(RelayPluginError):
    """A body that should be a RelayResponse is not one."""

    def __init__(self, problem: str, excerpt: str = "") -> None:
        text = problem if not excerpt else f"{problem}; body starts with {excerpt!r}"
        super().__init__(text)
        self.problem = problem
        self.excerpt = excerpt


class RelayError(RelayPluginError):
    """A relay to a remote bot failed."""

    def __init__(
        self,
        message: str,
        *,
        url: str,
        attempts: int = 0,
        status: int | None = None,
        excerpt: str = "",
    ) -> None:
        super().__init__(message)
        self.url = url
        self.attempts = attempts
        self.status = status
        self.excerpt = excerpt

    def __str__(self) -> str:
        parts = [self.args[0], f"url={self.url}", f"attempts={self.attempts}"]
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.excerpt:
            parts.append(f"body={self.excerpt!r}")
        return " ".join(parts)

    @property
    def user_message(self) -> str:
        return str(self.args[0])


class CircuitOpenError(RelayError):
    """The endpoint's circuit breaker is open, so nothing was sent."""

    def __init__(self, *, url: str, retry_in: float) -> None:
        if retry_in > 0:
            text = (f"circuit open for {url}: too many recent failures; "
                    f"the next try is allowed in {retry_in:.0f} s")  # fmt: skip
        else:
            text = f"circuit half-open for {url}: a probe request is in progress; try again shortly"
        super().__init__(text, url=url)
        self.retry_in = retry_in


class RemoteTimeoutError(RelayError):
    """The remote did not connect or did not answer in time."""


class RemoteUnreachableError(RelayError):
    """The remote could not be reached (refused, DNS failure, reset)."""


class RemoteHTTPError(RelayError):
    """The remote answered with a non-2xx status."""


class BadAnswerError(RelayError):
    """The remote answered 2xx with a body that is not a RelayResponse."""


class RemoteTaskError(RelayError):
    """The remote answered with a RelayResponse whose status is ``failed``."""


class EndpointBusyError(RelayError):
    """Too many relays to one endpoint are running and waiting; nothing was sent."""


class TargetBlockedError(RelayError):
    """The endpoint's host resolves only to addresses the guard does not allow; nothing was sent.

    This is a configuration problem, not an endpoint failure, so circuit breakers ignore it.
    """
