"""Which network destinations ftq may connect to on a tenant's behalf (SSRF policy).

Shared by webhooks (``service.webhooks.ssrf``) and team provider credentials
(``service.providers.credentials``): a tenant names a URL, ftq's workers connect to it, so
the URL must not reach into the operator's network. Two layers, both needed:

* ``validate_url`` refuses URLs that are malformed, ambiguous or point at a non-public
  address, either literally (in any of the spellings a resolver or browser would accept)
  or through DNS.
* At connect time the host is resolved once, every address is checked with
  ``check_resolved`` and the connection goes to that checked address (webhooks:
  ``service.webhooks.http``; providers: ``GuardedNetworkBackend`` below), so a name that
  re-resolves to an internal address later (DNS rebinding) never gets a connection.

The policy follows Svix's ``is_allowed`` and stripe/smokescreen's ``classifyAddr``: only
public unicast destinations, IPv4-mapped addresses judged by their IPv4 address, and every
IPv6 transition prefix that embeds IPv4 (NAT64, 6to4, Teredo) refused outright. Networks an
operator lists in the policy's ``allowed_networks`` are opted back in; the refusal names
the setting that does it (``allow_setting``).
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any
from urllib.parse import urlsplit

import httpcore2
import httpx2

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
# (host, port) -> the addresses a connection to it could go to, as strings.
Resolver = Callable[[str, int], list[str]]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_URL_LENGTH = 2048
BLOCKED_ADDRESS = "blocked address"


def _table(*entries: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), reason) for cidr, reason in entries)


# First match wins, so specific entries precede the ranges that contain them.
_IPV4_BLOCKED = _table(
    ("0.0.0.0/32", "unspecified"),
    ("0.0.0.0/8", "reserved"),  # "this network"
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "cgnat"),  # shared address space; also Alibaba's metadata service
    ("127.0.0.0/8", "loopback"),
    ("169.254.169.254/32", "cloud metadata"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "ietf protocol assignments"),  # includes Oracle's metadata 192.0.0.192
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)

_IPV6_BLOCKED = _table(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "ipv4-compatible"),  # deprecated; some stacks still route it to IPv4
    ("64:ff9b::/96", "nat64"),
    ("64:ff9b:1::/48", "nat64"),
    ("100::/64", "discard-only"),
    ("2001::/32", "teredo"),
    ("2001:2::/48", "benchmarking"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "srv6"),
    ("fd00:ec2::254/128", "cloud metadata"),  # AWS IMDS over IPv6
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)

# Everything public on IPv6 is allocated from 2000::/3; anything else is not a destination.
_IPV6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")


class UnsafeURL(ValueError):
    """A URL ftq refuses to connect to; ``reason`` says why in a few words, ``hint`` (when
    an operator could allow it) names the setting."""

    code = "unsafe_url"

    def __init__(self, reason: str, *, param: str = "url", hint: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = reason
        self.param = param
        self.hint = hint


@dataclass(frozen=True)
class Policy:
    """Where a kind of outbound request may go."""

    allowed_networks: tuple[str, ...] = ()
    allowed_schemes: tuple[str, ...] = ("https", "http")
    allowed_ports: tuple[int, ...] | None = None  # None: any port
    # The environment variable that opts networks back in, named in refusals.
    allow_setting: str = ""
    networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "networks", parse_networks(self.allowed_networks))


@dataclass(frozen=True)
class ValidatedURL:
    """A URL that passed the policy, split the way ``deliver`` will use it."""

    url: str  # as given
    scheme: str  # "http" or "https"
    host: str  # lower-case name without a trailing dot, or the canonical IP of a literal
    port: int  # explicit, or the scheme's default
    target: str  # path and query for the request line (the fragment is never sent)
    is_ip_literal: bool
    # Checked addresses to connect to, in resolver order. Empty only for a name validated
    # with resolve=False.
    addresses: tuple[str, ...]


def parse_networks(cidrs: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    return tuple(
        cidr if isinstance(cidr, IPv4Network | IPv6Network) else ipaddress.ip_network(cidr, False)
        for cidr in cidrs
    )


def _parse_address(ip: str | IPAddress) -> IPAddress | None:
    if isinstance(ip, IPv4Address | IPv6Address):
        address: IPAddress = ip
    else:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
    if isinstance(address, IPv6Address) and address.scope_id is not None:
        # A zone (fe80::1%eth0) only says which interface; judge the address itself.
        address = IPv6Address(int(address))
    return address


def canonical_address(ip: IPAddress) -> IPAddress:
    """The address a connection really goes to: IPv4-mapped IPv6 is its IPv4 address."""
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _embedded_ipv4(ip: IPv6Address, reason: str) -> IPv4Address | None:
    if reason == "6to4":
        return ip.sixtofour
    if reason == "teredo":
        return ip.teredo[1] if ip.teredo else None
    if reason == "ipv4-compatible" or ip in _NAT64_WELL_KNOWN:
        # 64:ff9b:1::/48 (local use) may embed at other offsets, so only the /96 is decoded.
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _blocked_reason(ip: IPAddress) -> str | None:
    table = _IPV4_BLOCKED if isinstance(ip, IPv4Address) else _IPV6_BLOCKED
    for network, reason in table:
        if ip in network:
            if isinstance(ip, IPv6Address):
                embedded = _embedded_ipv4(ip, reason)
                inner = _blocked_reason(embedded) if embedded is not None else None
                if inner is not None:
                    return f"{reason} embedding {inner}"
            return reason
    if isinstance(ip, IPv6Address) and ip not in _IPV6_GLOBAL_UNICAST:
        return "reserved"
    # Backstop for IANA special-purpose ranges not listed above (e.g. 2001::/23 remnants).
    if not ip.is_global:
        return "non-global"
    return None


def classify_address(
    ip: str | IPAddress, allowed_networks: Iterable[str | IPNetwork] = ()
) -> str | None:
    """Why ``ip`` is not a public unicast destination, or None when it may be contacted.

    Never raises: a string that is not an IP address is refused as "invalid address".
    An address inside ``allowed_networks`` (checked both as given and as the IPv4 address
    an IPv4-mapped one stands for) is allowed whatever its class.
    """
    address = _parse_address(ip)
    if address is None:
        return "invalid address"
    canonical = canonical_address(address)
    for network in parse_networks(allowed_networks):
        if canonical in network or address in network:
            return None
    return _blocked_reason(canonical)


def resolve_host(host: str, port: int) -> list[str]:
    """The default resolver: every address getaddrinfo gives for a TCP connection."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# --- URL parsing -------------------------------------------------------------------------

_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_DIGITS = re.compile(r"[0-9]+")
_HEX_NUMBER = re.compile(r"0x[0-9a-f]*")


def _ends_in_number(labels: list[str]) -> bool:
    """WHATWG URL's test for "this host is an IPv4 address", which resolvers agree with."""
    last = labels[-1]
    return bool(_DIGITS.fullmatch(last) or _HEX_NUMBER.fullmatch(last))


def _parse_ipv4_number(part: str) -> int | None:
    if part.startswith("0x"):
        digits, base = part[2:], 16
    elif len(part) > 1 and part.startswith("0"):
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if digits == "":
        return 0  # "0x" is zero for WHATWG and inet_aton alike
    try:
        return int(digits, base)
    except ValueError:
        return None


def parse_legacy_ipv4(host: str) -> IPv4Address | None:
    """Parse the IPv4 spellings inet_aton and browsers accept: ``127.1``, ``0x7f.1``,
    ``0177.0.0.1``, ``2130706433``. None when ``host`` is not a valid such spelling."""
    parts = host.split(".")
    if len(parts) > 4 or any(part == "" for part in parts):
        return None
    numbers = [_parse_ipv4_number(part) for part in parts]
    if any(number is None for number in numbers):
        return None
    values = [number for number in numbers if number is not None]
    *leading, last = values
    if any(value > 255 for value in leading) or last >= 256 ** (5 - len(values)):
        return None
    result = last
    for index, value in enumerate(leading):
        result += value << (8 * (3 - index))
    return IPv4Address(result)


def _split_netloc(netloc: str) -> tuple[str, bool, int | None]:
    """(host, bracketed, port) of an authority without userinfo; strict about everything."""
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise UnsafeURL("invalid host: unterminated IPv6 literal")
        host, rest, bracketed = netloc[1:end], netloc[end + 1 :], True
    else:
        host, colon, port_text = netloc.partition(":")
        rest, bracketed = colon + port_text, False
    if rest and not rest.startswith(":"):
        raise UnsafeURL("invalid host")
    port_text = rest[1:]
    if not port_text:
        return host, bracketed, None
    if not _DIGITS.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        raise UnsafeURL("invalid port")
    return host, bracketed, int(port_text)


def _literal_address(host: str, bracketed: bool) -> IPAddress | None:
    """The IP a host literally names, None for a DNS name; refuses hosts that are neither."""
    if bracketed:
        if "%" in host:
            raise UnsafeURL("invalid host: IPv6 zone identifiers are not allowed")
        try:
            return IPv6Address(host)
        except ValueError:
            raise UnsafeURL("invalid host: malformed IPv6 literal") from None
    if any(char in host for char in "[]:"):
        raise UnsafeURL("invalid host")
    labels = host.split(".")
    if any(not _LABEL.fullmatch(label) for label in labels) or len(host) > 253:
        raise UnsafeURL("invalid host name")
    if _ends_in_number(labels):
        # Resolvers read numeric hosts as addresses in many spellings; a host that ends in
        # a number but is none of them is ambiguous, so it is refused, not looked up.
        address = parse_legacy_ipv4(host)
        if address is None:
            raise UnsafeURL("invalid host: ambiguous numeric host")
        return address
    return None


def _refusal(reason: str, policy: Policy) -> UnsafeURL:
    hint = (
        f"an operator can allow this network with {policy.allow_setting}"
        if policy.allow_setting
        else ""
    )
    return UnsafeURL(f"{BLOCKED_ADDRESS}: {reason}", hint=hint)


def _check(address: IPAddress, policy: Policy) -> str:
    reason = classify_address(address, policy.networks)
    if reason is not None:
        raise _refusal(reason, policy)
    return str(canonical_address(address))


def check_resolved(addresses: Iterable[str], policy: Policy) -> tuple[str, ...]:
    """Every resolved address, canonical, if all are allowed; else UnsafeURL.

    All must pass, not just one: which address a client ends up on is not ours to choose
    once we hand over a name, and a mixed answer is a classic rebinding set-up.
    """
    checked = []
    for text in addresses:
        address = _parse_address(text)
        if address is None:
            raise UnsafeURL("host resolved to an invalid address")
        checked.append(_check(address, policy))
    if not checked:
        raise UnsafeURL("host does not resolve")
    return tuple(dict.fromkeys(checked))


def validate_url(
    url: str,
    policy: Policy,
    *,
    resolve: bool = True,
    resolver: Resolver | None = None,
) -> ValidatedURL:
    """Check ``url`` against ``policy`` and return it split for connecting.

    Raises ``UnsafeURL`` (``param="url"``) for anything but an ``http(s)`` URL, without
    credentials, on an allowed port, whose host is a public address or (with ``resolve``)
    a name all of whose addresses are public. ``localhost`` and ``*.localhost`` are
    loopback by definition (RFC 6761) and are never looked up.
    """
    if not isinstance(url, str) or not url:
        raise UnsafeURL("url is required")
    if len(url) > _MAX_URL_LENGTH:
        raise UnsafeURL(f"url is longer than {_MAX_URL_LENGTH} characters")
    # urlsplit silently drops tabs/newlines and parsers disagree about backslashes and
    # non-ASCII (IDNA maps full-width digits to 127.0.0.1), so only plain ASCII is accepted.
    if any(not "\x21" <= char <= "\x7e" for char in url) or "\\" in url:
        raise UnsafeURL(
            "url must be printable ASCII without spaces or backslashes "
            "(percent-encode the path, use the punycode form of the host)"
        )
    try:
        parts = urlsplit(url)
    except ValueError:
        raise UnsafeURL("malformed url") from None

    scheme = parts.scheme.lower()
    if scheme not in policy.allowed_schemes or scheme not in _DEFAULT_PORTS:
        reason = f"url scheme {scheme!r} is not allowed" if scheme else "url has no scheme"
        raise UnsafeURL(reason)
    if "@" in parts.netloc:
        raise UnsafeURL("credentials in the url are not allowed")
    raw_host, bracketed, port = _split_netloc(parts.netloc)
    if not raw_host:
        raise UnsafeURL("url has no host")
    port = port or _DEFAULT_PORTS[scheme]
    if policy.allowed_ports is not None and port not in policy.allowed_ports:
        raise UnsafeURL(f"port {port} is not allowed")

    host = raw_host.lower()
    if not bracketed and host.endswith("."):
        host = host[:-1]  # the absolute form of the same name
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    literal = _literal_address(host, bracketed)
    # RFC 6761: localhost names are loopback by definition and must not reach DNS.
    is_localhost = literal is None and is_localhost_name(host)
    if is_localhost:
        literal = IPv4Address("127.0.0.1")
    if literal is not None:
        try:
            address = _check(literal, policy)
        except UnsafeURL as refused:
            if is_localhost:
                raise _refusal("loopback (localhost)", policy) from None
            raise refused from None
        return ValidatedURL(
            url=url,
            scheme=scheme,
            host=host if is_localhost else address,
            port=port,
            target=target,
            is_ip_literal=not is_localhost,
            addresses=(address,),
        )

    addresses: tuple[str, ...] = ()
    if resolve:
        try:
            resolved = (resolver or resolve_host)(host, port)
        except (OSError, UnicodeError):
            raise UnsafeURL("host could not be resolved") from None
        addresses = check_resolved(resolved, policy)
    return ValidatedURL(
        url=url,
        scheme=scheme,
        host=host,
        port=port,
        target=target,
        is_ip_literal=False,
        addresses=addresses,
    )


def is_localhost_name(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


def resolve_checked(
    host: str, port: int, policy: Policy, resolver: Resolver | None = None
) -> tuple[str, ...]:
    """The checked addresses to connect to for ``host`` (a name or an IP literal)."""
    host = host.lower().rstrip(".") if not host.startswith("[") else host.strip("[]")
    literal = _parse_address(host)
    if literal is None and is_localhost_name(host):
        literal = IPv4Address("127.0.0.1")
    if literal is not None:
        return (_check(literal, policy),)
    try:
        resolved = (resolver or resolve_host)(host, port)
    except (OSError, UnicodeError):
        raise UnsafeURL("host could not be resolved") from None
    return check_resolved(resolved, policy)


def parse_network_list(value: Any) -> Any:
    """A settings value: ``"a, b"``, ``'["a","b"]'`` or a list, as normalised CIDRs."""
    if isinstance(value, str):
        text = value.strip()
        value = (
            json.loads(text)
            if text.startswith("[")
            else [item.strip() for item in text.split(",") if item.strip()]
        )
    if isinstance(value, list | tuple):
        # strict=False: "10.0.0.1/8" means the network 10/8.
        return [str(ipaddress.ip_network(str(cidr), strict=False)) for cidr in value]
    return value


# --- connect time: an httpx client whose every TCP connection is checked and pinned -------


class RefusedConnection(httpcore2.ConnectError):
    """A connection the policy refused (not a network failure: retrying will not help)."""


def refusal_in(exc: BaseException | None) -> str | None:
    """The policy's reason when ``exc`` (an SDK or httpx error) was caused by a refused
    connection; the SDK wraps it as a plain "Connection error." otherwise."""
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, RefusedConnection):
            return str(exc)
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


class GuardedNetworkBackend(httpcore2.NetworkBackend):
    """httpcore's network layer with the policy in front of every connection.

    httpcore hands ``connect_tcp`` the URL's host; this resolves it once, refuses unless
    every address passes, and connects to the checked address itself. TLS still verifies
    the URL's host (httpcore sets SNI and the hostname from the request, not from here).
    Redirects need nothing extra: each new connection comes through here again.
    """

    def __init__(self, policy: Policy, resolver: Resolver | None = None) -> None:
        self.policy = policy
        self._resolver = resolver
        self._inner = httpcore2.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        try:
            addresses = resolve_checked(host, port, self.policy, self._resolver)
        except UnsafeURL as refused:
            hint = f"; {refused.hint}" if refused.hint else ""
            raise RefusedConnection(
                f"connection to {host} refused by ftq's network policy: {refused.reason}{hint}"
            ) from None
        failure: Exception | None = None
        for ip in addresses:
            try:
                return self._inner.connect_tcp(ip, port, timeout, local_address, socket_options)
            except httpcore2.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.NetworkStream:
        raise RefusedConnection("unix sockets are not allowed by ftq's network policy")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def guarded_http_client(
    policy: Policy, *, timeout: float, resolver: Resolver | None = None
) -> httpx2.Client:
    """An httpx client (for the ``openai`` SDK's ``http_client``) bound by ``policy``.

    Environment proxies are ignored on purpose: through a proxy the check would judge the
    proxy's address, not the tenant's destination.
    """
    transport = httpx2.HTTPTransport(trust_env=False)
    # HTTPTransport takes no network backend; its pool is swapped for one that has ours.
    transport._pool = httpcore2.ConnectionPool(
        ssl_context=httpx2.create_ssl_context(trust_env=False),
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=GuardedNetworkBackend(policy, resolver),
    )
    return httpx2.Client(transport=transport, timeout=timeout, follow_redirects=True)
