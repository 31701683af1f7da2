"""The SSRF policy: address classes, every spelling of a literal host, and DNS answers."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.webhooks.settings import WebhookSettings
from service.webhooks.ssrf import (
    UnsafeWebhookURL,
    classify_address,
    parse_legacy_ipv4,
    validate_webhook_url,
)

DEFAULTS = WebhookSettings()


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"literal or refused host {host!r} must not be looked up")


def resolving_to(*addresses: str):
    def resolver(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolver


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1", "blocked address: loopback"),
        ("http://169.254.169.254/latest/meta-data", "blocked address: cloud metadata"),
        ("http://[::1]", "blocked address: loopback"),
        ("http://[::ffff:10.0.0.1]", "blocked address: private"),
        ("http://[::ffff:127.0.0.1]", "blocked address: loopback"),
        ("http://[::ffff:7f00:1]", "blocked address: loopback"),
        ("http://0x7f000001", "blocked address: loopback"),
        ("http://2130706433", "blocked address: loopback"),
        ("http://0177.0.0.1", "blocked address: loopback"),
        ("http://127.1", "blocked address: loopback"),
        ("http://0x7f.1", "blocked address: loopback"),
        ("http://127.0.0.1.", "blocked address: loopback"),
        ("HTTP://127.0.0.1:8080/x", "blocked address: loopback"),
        ("http://0", "blocked address: unspecified"),
        ("http://0.0.0.0", "blocked address: unspecified"),
        ("http://[::]", "blocked address: unspecified"),
        ("http://100.64.0.1", "blocked address: cgnat"),
        ("http://10.1.2.3", "blocked address: private"),
        ("http://172.16.0.1", "blocked address: private"),
        ("http://192.168.1.1", "blocked address: private"),
        ("http://169.254.0.1", "blocked address: link-local"),
        ("http://224.0.0.1", "blocked address: multicast"),
        ("http://255.255.255.255", "blocked address: broadcast"),
        ("http://240.0.0.1", "blocked address: reserved"),
        ("http://192.0.2.1", "blocked address: documentation"),
        ("http://198.18.0.1", "blocked address: benchmarking"),
        ("http://192.0.0.192", "blocked address: ietf protocol assignments"),
        ("http://192.88.99.1", "blocked address: 6to4 relay anycast"),
        ("http://[64:ff9b::a00:1]", "blocked address: nat64 embedding private"),
        ("http://[64:ff9b::808:808]", "blocked address: nat64"),
        ("http://[64:ff9b:1::1]", "blocked address: nat64"),
        ("http://[2002:7f00:1::]", "blocked address: 6to4 embedding loopback"),
        ("http://[2002:808:808::1]", "blocked address: 6to4"),
        (
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
            "blocked address: teredo embedding documentation",
        ),
        ("http://[::127.0.0.1]", "blocked address: ipv4-compatible embedding loopback"),
        ("http://[fd00:ec2::254]", "blocked address: cloud metadata"),
        ("http://[fc00::1]", "blocked address: unique-local"),
        ("http://[fe80::1]", "blocked address: link-local"),
        ("http://[fec0::1]", "blocked address: site-local"),
        ("http://[ff02::1]", "blocked address: multicast"),
        ("http://[2001:db8::1]", "blocked address: documentation"),
        ("http://[4000::1]", "blocked address: reserved"),
        ("http://localhost", "blocked address: loopback (localhost)"),
        ("http://localhost.", "blocked address: loopback (localhost)"),
        ("http://LOCALHOST:8000", "blocked address: loopback (localhost)"),
        ("http://foo.localhost", "blocked address: loopback (localhost)"),
        ("http://user:pw@example.com", "credentials in the url are not allowed"),
        ("http://user@example.com", "credentials in the url are not allowed"),
        ("http://example.com@127.0.0.1", "credentials in the url are not allowed"),
        ("ftp://example.com", "url scheme 'ftp' is not allowed"),
        ("file:///etc/passwd", "url scheme 'file' is not allowed"),
        ("gopher://example.com:70/_GET%20/", "url scheme 'gopher' is not allowed"),
        ("dict://example.com:11211/stat", "url scheme 'dict' is not allowed"),
        ("example.com/hook", "url has no scheme"),
        ("http:///hook", "url has no host"),
        ("http://example.com:0/", "invalid port"),
        ("http://example.com:65536/", "invalid port"),
        ("http://example.com:+80/", "invalid port"),
        ("http://example.com:80:80/", "invalid port"),
        ("http://1.2.3.08", "invalid host: ambiguous numeric host"),
        ("http://256.0.0.1", "invalid host: ambiguous numeric host"),
        ("http://1.2.3.4.5", "invalid host: ambiguous numeric host"),
        ("http://example.0x10", "invalid host: ambiguous numeric host"),
        ("http://[fe80::1%25eth0]", "invalid host: IPv6 zone identifiers are not allowed"),
        ("http://[::1", "malformed url"),
        ("http://%31%32%37.0.0.1", "invalid host name"),
        ("http://exa_mple..com", "invalid host name"),
    ],
)
def test_ssrf_matrix(url: str, reason: str):
    with pytest.raises(UnsafeWebhookURL) as caught:
        validate_webhook_url(url, DEFAULTS, resolver=no_dns)
    assert caught.value.reason == reason
    assert caught.value.param == "url"


@pytest.mark.parametrize(
    "url",
    [
        "http://exa mple.com/",
        "http://example.com/\t",
        "http://example.com\\@127.0.0.1/",
        # Full-width digits, which IDNA would map to 127.0.0.1.
        "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",
        "http://ex\u00e4mple.com/",
        "http://example.com/\u00e4",
        "",
        "http://example.com/" + "a" * 2048,
    ],
)
def test_non_ascii_whitespace_and_oversized_urls_are_refused(url: str):
    with pytest.raises(UnsafeWebhookURL):
        validate_webhook_url(url, DEFAULTS, resolver=no_dns)


def test_hostname_resolving_to_a_private_address_is_refused():
    with pytest.raises(UnsafeWebhookURL, match="blocked address: private"):
        validate_webhook_url(
            "https://hooks.example.com", DEFAULTS, resolver=resolving_to("10.0.0.5")
        )


def test_hostname_with_one_public_and_one_private_address_is_refused():
    resolver = resolving_to("93.184.215.14", "10.0.0.5")
    with pytest.raises(UnsafeWebhookURL, match="blocked address: private"):
        validate_webhook_url("https://hooks.example.com", DEFAULTS, resolver=resolver)


@pytest.mark.parametrize("answer", ["::ffff:169.254.169.254", "fe80::1%eth0", "0.0.0.0"])
def test_hostname_resolving_to_disguised_internal_addresses_is_refused(answer: str):
    with pytest.raises(UnsafeWebhookURL, match="blocked address"):
        validate_webhook_url("https://hooks.example.com", DEFAULTS, resolver=resolving_to(answer))


def test_the_blocked_reason_does_not_reveal_the_resolved_address():
    # Tenants see this message; echoing internal DNS answers would make us a DNS oracle.
    with pytest.raises(UnsafeWebhookURL) as caught:
        validate_webhook_url("https://db.corp.example", DEFAULTS, resolver=resolving_to("10.9.8.7"))
    assert "10.9.8.7" not in str(caught.value)


@pytest.mark.parametrize(
    ("resolver", "reason"),
    [
        (resolving_to(), "host does not resolve"),
        (resolving_to("not-an-ip"), "host resolved to an invalid address"),
    ],
)
def test_unusable_dns_answers_are_refused(resolver, reason: str):
    with pytest.raises(UnsafeWebhookURL, match=reason):
        validate_webhook_url("https://hooks.example.com", DEFAULTS, resolver=resolver)


def test_dns_failure_is_refused():
    def failing(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(UnsafeWebhookURL, match="host could not be resolved"):
        validate_webhook_url("https://nx.example.com", DEFAULTS, resolver=failing)


def test_public_url_is_split_for_sending():
    seen: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        seen.append((host, port))
        return ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "93.184.215.14"]

    result = validate_webhook_url(
        "HTTPS://Hooks.Example.com.:8443/a/b?c=d#frag", DEFAULTS, resolver=resolver
    )
    assert seen == [("hooks.example.com", 8443)]
    assert result.scheme == "https" and result.host == "hooks.example.com" and result.port == 8443
    assert result.target == "/a/b?c=d"
    assert result.addresses == ("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    assert not result.is_ip_literal


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://8.8.8.8", "8.8.8.8"),
        ("http://134744072", "8.8.8.8"),
        ("http://0x8080808", "8.8.8.8"),
        ("http://[::ffff:8.8.8.8]", "8.8.8.8"),
        ("https://[2606:4700:4700::1111]/x", "2606:4700:4700::1111"),
    ],
)
def test_public_literals_are_canonicalised_and_never_looked_up(url: str, host: str):
    result = validate_webhook_url(url, DEFAULTS, resolver=no_dns)
    assert result.is_ip_literal and result.host == host and result.addresses == (host,)


def test_resolve_false_skips_dns_but_still_checks_literals():
    assert (
        validate_webhook_url("https://hooks.example.com", DEFAULTS, resolve=False).addresses == ()
    )
    with pytest.raises(UnsafeWebhookURL):
        validate_webhook_url("http://2130706433", DEFAULTS, resolve=False)


def test_allow_listed_networks_pass():
    settings = WebhookSettings(allowed_networks=["127.0.0.0/8", "10.0.0.0/8"])
    assert validate_webhook_url("http://127.0.0.1:9000/x", settings).addresses == ("127.0.0.1",)
    assert validate_webhook_url("http://[::ffff:127.0.0.1]", settings).addresses == ("127.0.0.1",)
    localhost = validate_webhook_url("http://localhost:9000", settings, resolver=no_dns)
    assert localhost.host == "localhost" and localhost.addresses == ("127.0.0.1",)
    named = validate_webhook_url(
        "http://receiver:9000", settings, resolver=resolving_to("10.0.0.5")
    )
    assert named.addresses == ("10.0.0.5",)
    # Only the listed networks: everything else stays refused.
    with pytest.raises(UnsafeWebhookURL):
        validate_webhook_url("http://192.168.0.1", settings)
    with pytest.raises(UnsafeWebhookURL):
        validate_webhook_url("http://[::1]", settings)


def test_scheme_and_port_allow_lists():
    settings = WebhookSettings(allowed_schemes=["https"], allowed_ports=[443, 8443])
    public = resolving_to("93.184.215.14")
    validate_webhook_url("https://example.com:8443", settings, resolver=public)
    with pytest.raises(UnsafeWebhookURL, match="scheme 'http'"):
        validate_webhook_url("http://example.com", settings, resolver=public)
    with pytest.raises(UnsafeWebhookURL, match="port 8080"):
        validate_webhook_url("https://example.com:8080", settings, resolver=public)


# --- numeric hosts are read exactly as the C library reads them --------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7F000001".lower(), "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0x", "0.0.0.0"),
        ("0", "0.0.0.0"),
        ("1.2.3.08", None),
        ("1.2.3.4.5", None),
        ("4294967296", None),
        ("1..2", None),
        ("0xg", None),
    ],
)
def test_parse_legacy_ipv4(host: str, expected: str | None):
    parsed = parse_legacy_ipv4(host)
    assert (str(parsed) if parsed else None) == expected


def _spell(value: int, base: int) -> str:
    return {10: str(value), 8: "0" + format(value, "o"), 16: "0x" + format(value, "x")}[base]


@given(
    address=st.integers(0, 2**32 - 1),
    part_count=st.integers(1, 4),
    bases=st.lists(st.sampled_from([8, 10, 16]), min_size=4, max_size=4),
)
def test_parse_legacy_ipv4_agrees_with_inet_aton(address: int, part_count: int, bases: list[int]):
    octets = list(address.to_bytes(4, "big"))
    leading = octets[: part_count - 1]
    last = int.from_bytes(bytes(octets[part_count - 1 :]), "big")
    parts = [_spell(value, base) for value, base in zip([*leading, last], bases, strict=False)]
    spelling = ".".join(parts)
    assert socket.inet_aton(spelling) == address.to_bytes(4, "big")  # what a connect would use
    assert parse_legacy_ipv4(spelling) == ipaddress.IPv4Address(address)


# --- classify_address --------------------------------------------------------------------


@given(st.ip_addresses())
def test_classify_address_never_raises(address):
    reason = classify_address(address)
    assert reason is None or isinstance(reason, str)
    assert classify_address(str(address)) == reason


@given(st.text(max_size=60))
def test_classify_address_never_raises_on_arbitrary_text(text: str):
    reason = classify_address(text)
    assert reason is None or isinstance(reason, str)


@pytest.mark.parametrize(
    "network", ["127.0.0.0/8", "10.0.0.0/8", "169.254.0.0/16", "::ffff:10.0.0.0/104"]
)
@given(data=st.data())
def test_every_address_in_internal_ranges_is_refused(network: str, data):
    address = data.draw(st.ip_addresses(network=network))
    assert classify_address(address) is not None


def test_public_addresses_are_allowed():
    for address in ("8.8.8.8", "93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert classify_address(address) is None


def test_allow_list_overrides_by_canonical_address():
    assert classify_address("::ffff:127.0.0.1", ["127.0.0.0/8"]) is None
    assert classify_address("10.1.1.1", [ipaddress.ip_network("10.0.0.0/8")]) is None
    assert classify_address("10.1.1.1", ["192.168.0.0/16"]) == "private"


_URL_ALPHABET = st.sampled_from([*"abcx0179.:/@[]%#?\\- \t\u00e4\uff11", "0x", "::", "ffff"])


@given(
    scheme=st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "", "http:/"]),
    rest=st.lists(_URL_ALPHABET, max_size=25).map("".join),
)
def test_validate_webhook_url_only_ever_raises_unsafe_webhook_url(scheme: str, rest: str):
    # The API turns UnsafeWebhookURL into a 422; any other exception would be a 500.
    try:
        result = validate_webhook_url(scheme + rest, DEFAULTS, resolver=resolving_to("8.8.8.8"))
    except UnsafeWebhookURL:
        return
    assert result.scheme in ("http", "https") and result.addresses
    assert all(classify_address(address) is None for address in result.addresses)
