"""Relay target guard: which hosts and addresses relays may connect to.

Bot URLs come from Slack chat, so without this check any channel member could make the app post
conversations to loopback services, the cloud metadata service or the private network. An
address is allowed when it is globally reachable, or when it lies in a network listed in
RELAY_ALLOWED_HOSTS. A host name listed there is allowed whatever it resolves to.

Targets are checked at bind time (``TargetGuard.resolve_url``) and again on every connection:
GuardedResolver is the resolver of the relay session's TCPConnector, so aiohttp connects only to
addresses that passed the check, with no second lookup in between. aiohttp 3.14 does not call
its resolver for an IP-literal host, so RelaySender checks those with ``TargetGuard.check_url``.

A lookup's disallowed addresses are dropped, and the lookup fails only when none remain. That is
safe because the connector receives only the remaining addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from relay_plugin.core.endpoints import validate_url
from relay_plugin.errors import ConfigError, InvalidBindingError, TargetNotAllowedError

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_HOSTS_SETTING = "RELAY_ALLOWED_HOSTS"
# A Slack slash command must be acknowledged within 3 s, and a bind looks the host up first.
BIND_RESOLVE_TIMEOUT_S = 2.0
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_PRIVATE = (
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv4Network("172.16.0.0/12"),
    ipaddress.IPv4Network("192.168.0.0/16"),
    ipaddress.IPv6Network("fc00::/7"),
)
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_ENTRY_HELP = (
    "list host names, IP addresses or CIDR ranges separated by commas, without scheme or port, "
    "e.g. 127.0.0.1,::1,bots.internal.example,10.20.0.0/16"
)


def address_problem(address: IPAddress) -> str | None:
    """Return why relays must not connect to ``address`` (e.g. "a private address"), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded, form = _embedded_ipv4(address)
        if embedded is not None:
            problem = address_problem(embedded)
            return None if problem is None else f"the {form} form of {embedded}, {problem}"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address in _SHARED:
        return "a shared address (100.64.0.0/10, used for carrier-grade NAT)"
    if any(address in network for network in _PRIVATE):
        return "a private address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "a special-purpose address that is not globally reachable"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address | None, str]:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64"
    if address.sixtofour is not None:
        return address.sixtofour, "6to4"
    return None, ""


def is_ip_literal(host: str) -> bool:
    """Return whether aiohttp treats ``host`` as an IP address and so skips its resolver."""
    # The same test as aiohttp 3.14's helpers.is_ip_address, which decides whether
    # TCPConnector resolves a host. A host it treats as an address must be checked here.
    return ":" in host or host.replace(".", "").isdigit()


def _normalize_name(host: str) -> str:
    return host.lower().rstrip(".")


@dataclass(frozen=True, slots=True)
class HostAllowList:
    """Host names and networks that relays may reach although they are not globally reachable."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, value: str) -> HostAllowList:
        """Parse a RELAY_ALLOWED_HOSTS value; an invalid entry raises ConfigError."""
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in value.split(","):
            entry = raw.strip()
            if not entry:
                continue
            bare = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
            if "/" in bare or is_ip_literal(bare):
                networks.append(_parse_network(entry, bare))
            elif len(bare) <= 253 and _HOST_NAME.fullmatch(bare):
                names.add(_normalize_name(bare))
            else:
                raise ConfigError(
                    ALLOWED_HOSTS_SETTING,
                    f"{entry!r} is not a host name, IP address or CIDR range; {_ENTRY_HELP}",
                )
        return cls(frozenset(names), tuple(networks))

    def allows_name(self, host: str) -> bool:
        """Return whether ``host`` is a listed host name."""
        return _normalize_name(host) in self.names

    def allows_address(self, address: IPAddress) -> bool:
        """Return whether ``address`` (or the IPv4 address it maps) is in a listed network."""
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(
            candidate in network
            for candidate in candidates
            for network in self.networks
            if candidate.version == network.version
        )

    def __str__(self) -> str:
        return ",".join([*sorted(self.names), *(str(network) for network in self.networks)])


def _parse_network(entry: str, bare: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(bare)
    except ValueError as exc:
        problem = f"{entry!r} is not a valid IP address or CIDR range ({exc})"
    try:
        # A range written with host bits set, e.g. 10.20.0.5/16, names a valid network.
        suggestion = f"; write the network address, e.g. {ipaddress.ip_network(bare, strict=False)}"
    except ValueError:
        suggestion = f"; {_ENTRY_HELP}"
    raise ConfigError(ALLOWED_HOSTS_SETTING, problem + suggestion)


class TargetGuard:
    """Checks relay targets: IP literals directly, host names through a resolver.

    Without ``resolver`` the guard creates aiohttp's DefaultResolver, so create it in a running
    event loop, and close it at exit.
    """

    def __init__(
        self,
        allowed: HostAllowList | None = None,
        *,
        resolver: AbstractResolver | None = None,
        resolve_timeout_s: float = BIND_RESOLVE_TIMEOUT_S,
    ) -> None:
        self._allowed = allowed or HostAllowList()
        self._owns_resolver = resolver is None
        self._resolver = resolver if resolver is not None else DefaultResolver()
        self._resolve_timeout_s = resolve_timeout_s

    def __repr__(self) -> str:
        return f"TargetGuard(allowed={str(self._allowed)!r})"

    @property
    def allowed(self) -> HostAllowList:
        """The RELAY_ALLOWED_HOSTS entries this guard accepts."""
        return self._allowed

    def check_url(self, url: str) -> str:
        """Validate ``url``, check its host if it is an IP literal, and return the host.

        A host name is checked when it is resolved. Raises InvalidBindingError, and its subclass
        TargetNotAllowedError for an address that relays must not connect to.
        """
        url = validate_url(url)
        try:
            host = URL(url).raw_host or ""
        except ValueError as exc:
            raise InvalidBindingError("URL", url, f"it cannot be parsed ({exc})") from None
        if is_ip_literal(host):
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                raise InvalidBindingError(
                    "URL", url, f"{host} is not a valid IP address; write it like 192.0.2.10"
                ) from None
            problem = self._problem(address)
            if problem is not None:
                logger.warning("relay target %s blocked: it is %s", host, problem)
                raise TargetNotAllowedError(url, host, [(host, problem)])
        return host

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        """Resolve ``host`` and return only the results that relays may connect to.

        Raises TargetNotAllowedError when no allowed address remains, and OSError when the
        lookup fails.
        """
        results = await self._resolver.resolve(host, port, family)
        if not results:
            raise socket.gaierror(socket.EAI_NONAME, f"no address found for {host}")
        if self._allowed.allows_name(host):
            return results
        allowed_results: list[ResolveResult] = []
        blocked: list[tuple[str, str]] = []
        for result in results:
            try:
                problem = self._problem(ipaddress.ip_address(result["host"]))
            except ValueError:
                problem = "not a valid IP address"
            if problem is None:
                allowed_results.append(result)
            else:
                blocked.append((result["host"], problem))
        if not allowed_results:
            logger.warning(
                "relay target %s blocked: it resolves only to %s",
                host, ", ".join(f"{address} ({problem})" for address, problem in blocked),
            )  # fmt: skip
            raise TargetNotAllowedError(host, host, blocked)
        if blocked:
            logger.debug(
                "relay target %s: skipped disallowed addresses %s",
                host, ", ".join(address for address, _ in blocked),
            )  # fmt: skip
        return allowed_results

    async def resolve_url(self, url: str) -> list[str]:
        """Check ``url`` like check_url, then resolve a host name; return the allowed addresses.

        Raises InvalidBindingError when the name does not resolve in ``resolve_timeout_s``, and
        TargetNotAllowedError when it resolves only to addresses that are not allowed.
        """
        host = self.check_url(url)
        if is_ip_literal(host):
            return [host]
        url = url.strip()
        port = URL(url).port or 0
        try:
            async with asyncio.timeout(self._resolve_timeout_s):
                results = await self.resolve(host, port)
        except TargetNotAllowedError as exc:
            raise TargetNotAllowedError(url, host, exc.blocked) from None
        except TimeoutError:
            # Listed before OSError, because TimeoutError is a subclass of it.
            raise InvalidBindingError(
                "URL", url,
                f"looking up {host} timed out after {self._resolve_timeout_s:g} s; "
                "check the name, or try again",
            ) from None  # fmt: skip
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise InvalidBindingError(
                "URL", url, f"{host} does not resolve ({reason}); check the name"
            ) from None
        return [result["host"] for result in results]

    async def close(self) -> None:
        """Close the resolver if this guard created it."""
        if self._owns_resolver:
            await self._resolver.close()

    def _problem(self, address: IPAddress) -> str | None:
        if self._allowed.allows_address(address):
            return None
        return address_problem(address)


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that returns only the addresses its TargetGuard allows.

    Use it with ``TCPConnector(resolver=..., use_dns_cache=False)``, so every connection is made
    to an address checked for it. Closing it leaves the guard's own resolver open.
    """

    def __init__(self, guard: TargetGuard) -> None:
        self._guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` through the guard; raises TargetNotAllowedError or OSError."""
        return await self._guard.resolve(host, port, family)

    async def close(self) -> None:
        """Do nothing, because the guard owns the resolver it wraps."""
