"""``deliver`` against real listeners on 127.0.0.1 (opted in with allowed_networks)."""

from __future__ import annotations

import datetime as dt
import ssl
import threading
import time
from collections.abc import Callable
from email.utils import format_datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks import Webhook

from service.webhooks import http as webhook_http
from service.webhooks.http import deliver, parse_retry_after
from service.webhooks.settings import WebhookSettings
from service.webhooks.signing import build_headers, generate_secret
from service.webhooks.ssrf import validate_webhook_url
from tests.unit.webhooks.receivers import (
    Receiver,
    closed_port,
    endless_body,
    reply,
    stall,
    stall_body,
    trickle_headers,
    wait_for,
)

LOOPBACK_OK = WebhookSettings(allowed_networks=["127.0.0.0/8"], timeout_seconds=3.0)
PAYLOAD = b'{"id":"evt_1","object":"event","type":"webhook.test","data":{}}'
# Never contacted: every test that resolves to it replaces the socket opener.
PUBLIC_IP = "93.184.215.14"

StartReceiver = Callable[..., Receiver]


def _headers(secret: str = "") -> dict[str, str]:
    return build_headers([secret or generate_secret()], "msg_test1", PAYLOAD)


def test_2xx_is_ok_and_the_receiver_verifies_the_signature(receiver_factory: StartReceiver):
    receiver = receiver_factory(reply(202, b"accepted"))
    secret = generate_secret()

    result = deliver(receiver.url("/hook?x=1"), _headers(secret), PAYLOAD, LOOPBACK_OK)

    assert result.ok and result.status_code == 202 and result.error is None
    assert result.response_body == "accepted"
    assert result.connected_ip == "127.0.0.1"
    assert result.latency_ms > 0
    [request] = receiver.requests
    assert request.method == "POST" and request.path == "/hook?x=1"
    assert request.body == PAYLOAD
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "ftq-webhooks/1"
    # Exactly what a Standard Webhooks receiver does with the raw body and headers.
    assert Webhook(secret).verify(request.body, request.headers) == {
        "id": "evt_1",
        "object": "event",
        "type": "webhook.test",
        "data": {},
    }


def test_500_is_a_failure_with_status_and_body(receiver_factory: StartReceiver):
    receiver = receiver_factory(reply(500, b"boom"))
    result = deliver(receiver.url(), _headers(), PAYLOAD, LOOPBACK_OK)
    assert not result.ok and result.status_code == 500 and result.error is None
    assert result.response_body == "boom" and not result.gone


def test_410_means_gone(receiver_factory: StartReceiver):
    receiver = receiver_factory(reply(410, b""))
    result = deliver(receiver.url(), _headers(), PAYLOAD, LOOPBACK_OK)
    assert result.gone and not result.ok and result.status_code == 410


def test_429_retry_after_seconds_is_parsed(receiver_factory: StartReceiver):
    receiver = receiver_factory(reply(429, b"slow down", {"Retry-After": "120"}))
    result = deliver(receiver.url(), _headers(), PAYLOAD, LOOPBACK_OK)
    assert result.status_code == 429 and not result.ok
    assert result.retry_after_seconds == 120.0


def test_503_retry_after_http_date_is_parsed(receiver_factory: StartReceiver):
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=90)
    receiver = receiver_factory(
        reply(503, b"", {"Retry-After": format_datetime(when, usegmt=True)})
    )
    result = deliver(receiver.url(), _headers(), PAYLOAD, LOOPBACK_OK)
    assert result.status_code == 503
    assert result.retry_after_seconds is not None and 85 <= result.retry_after_seconds <= 90


def test_retry_after_is_ignored_on_other_statuses(receiver_factory: StartReceiver):
    receiver = receiver_factory(reply(500, b"", {"Retry-After": "120"}))
    assert deliver(receiver.url(), _headers(), PAYLOAD, LOOPBACK_OK).retry_after_seconds is None


def test_parse_retry_after():
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 00:02:00 GMT", now=now) == 120.0
    assert parse_retry_after("Tue, 31 Dec 2024 23:00:00 GMT", now=now) == 0.0
    for garbage in (None, "", "soon", "-5", "1.5", "١٢"):
        assert parse_retry_after(garbage, now=now) is None


def test_redirect_is_not_followed(receiver_factory: StartReceiver):
    target = receiver_factory()
    redirector = receiver_factory(reply(302, b"", {"Location": target.url("/internal")}))

    result = deliver(redirector.url(), _headers(), PAYLOAD, LOOPBACK_OK)

    assert not result.ok and result.status_code == 302
    assert result.location == target.url("/internal")
    assert result.error == "redirect not followed"
    assert len(redirector.requests) == 1
    time.sleep(0.1)  # give a (wrongly) followed redirect time to land
    assert target.requests == []


def test_slow_receiver_times_out(receiver_factory: StartReceiver):
    receiver = receiver_factory(stall)
    settings = LOOPBACK_OK.model_copy(update={"timeout_seconds": 0.5})
    started = time.monotonic()
    result = deliver(receiver.url(), _headers(), PAYLOAD, settings)
    assert result.error == "timeout" and not result.ok and result.status_code is None
    assert time.monotonic() - started < 2.0


def test_trickling_receiver_cannot_stretch_the_timeout(receiver_factory: StartReceiver):
    # Each byte arrives well within a per-read timeout; only a total budget stops this.
    receiver = receiver_factory(trickle_headers)
    settings = LOOPBACK_OK.model_copy(update={"timeout_seconds": 0.5})
    started = time.monotonic()
    result = deliver(receiver.url(), _headers(), PAYLOAD, settings)
    assert result.error == "timeout" and not result.ok and result.status_code is None
    assert time.monotonic() - started < 2.0


def test_stalled_body_after_a_2xx_is_a_timeout_not_a_success(receiver_factory: StartReceiver):
    receiver = receiver_factory(stall_body)
    settings = LOOPBACK_OK.model_copy(update={"timeout_seconds": 0.5})
    result = deliver(receiver.url(), _headers(), PAYLOAD, settings)
    assert result.status_code == 200 and result.error == "timeout" and not result.ok


def test_large_body_is_truncated(receiver_factory: StartReceiver):
    receiver = receiver_factory(reply(200, b"a" * 1_000_000))
    result = deliver(receiver.url(), _headers(), PAYLOAD, LOOPBACK_OK)
    assert result.ok and result.response_body == "a" * 2048


def test_endless_body_is_not_read_to_the_end(receiver_factory: StartReceiver):
    receiver = receiver_factory(endless_body)
    started = time.monotonic()
    result = deliver(receiver.url(), _headers(), PAYLOAD, LOOPBACK_OK)
    assert result.ok and len(result.response_body) == 2048
    assert time.monotonic() - started < 2.0


def test_body_is_decoded_leniently_without_nuls(receiver_factory: StartReceiver):
    receiver = receiver_factory(reply(400, b"bad\x00 input \xff"))
    result = deliver(receiver.url(), _headers(), PAYLOAD, LOOPBACK_OK)
    assert result.response_body == "bad input \ufffd"


def test_connection_refused_is_reported():
    url = f"http://127.0.0.1:{closed_port()}/"
    result = deliver(url, _headers(), PAYLOAD, LOOPBACK_OK)
    assert result.error == "connection refused" and result.status_code is None
    assert result.connected_ip is None


def test_caller_cannot_override_host_or_framing(receiver_factory: StartReceiver):
    receiver = receiver_factory()
    headers = {**_headers(), "Host": "metadata.internal", "Content-Length": "1"}
    assert deliver(receiver.url(), headers, PAYLOAD, LOOPBACK_OK).ok
    [request] = receiver.requests
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert request.body == PAYLOAD


def test_header_injection_is_an_error_not_an_exception(receiver_factory: StartReceiver):
    receiver = receiver_factory()
    result = deliver(receiver.url(), {"x-evil": "a\r\nInjected: 1"}, PAYLOAD, LOOPBACK_OK)
    assert not result.ok and result.error is not None and result.error.startswith("invalid")
    assert receiver.requests == []


# --- SSRF at send time -------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "2130706433", "0x7f.1", "[::ffff:127.0.0.1]", "localhost"]
)
def test_default_settings_refuse_loopback_and_nothing_arrives(
    receiver_factory: StartReceiver, host: str
):
    receiver = receiver_factory()
    result = deliver(receiver.url(host=host), _headers(), PAYLOAD, WebhookSettings())
    assert not result.ok and result.status_code is None and result.connected_ip is None
    assert result.error is not None and result.error.startswith("blocked address: loopback")
    time.sleep(0.05)
    assert receiver.requests == []


def test_name_resolving_to_loopback_is_refused(receiver_factory: StartReceiver):
    receiver = receiver_factory()
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    result = deliver(
        receiver.url(host="hooks.example.com"),
        _headers(),
        PAYLOAD,
        WebhookSettings(),
        resolver=resolver,
    )
    assert result.error == "blocked address: loopback"
    assert lookups == ["hooks.example.com"]
    assert receiver.requests == []


def test_name_resolving_to_a_private_address_is_refused_before_connecting(monkeypatch):
    connects: list[str] = []
    monkeypatch.setattr(webhook_http, "_open_socket", lambda ip, *a: connects.append(ip))
    result = deliver(
        "https://hooks.example.com/x",
        _headers(),
        PAYLOAD,
        WebhookSettings(),
        resolver=lambda host, port: ["10.0.0.5"],
    )
    assert result.error == "blocked address: private"
    assert connects == []


def _rebinding_resolver(first: str, then: str) -> tuple[Callable[[str, int], list[str]], list[str]]:
    answers: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        answers.append(first if not answers else then)
        return [answers[-1]]

    return resolver, answers


def test_rebinding_deliver_resolves_once_and_connects_to_the_checked_address(
    receiver_factory: StartReceiver, monkeypatch
):
    receiver = receiver_factory()
    resolver, answers = _rebinding_resolver(PUBLIC_IP, "127.0.0.1")
    connects: list[str] = []

    def fake_open_socket(ip: str, port: int, timeout: float):
        # Stand-in for the network: nothing may leave loopback in this test suite.
        connects.append(ip)
        raise ConnectionRefusedError

    monkeypatch.setattr(webhook_http, "_open_socket", fake_open_socket)
    url = receiver.url(host="rebind.example.com")

    result = deliver(url, _headers(), PAYLOAD, WebhookSettings(), resolver=resolver)

    assert answers == [PUBLIC_IP]  # one lookup, no second chance for the attacker's DNS
    assert connects == [PUBLIC_IP]
    assert result.error == "connection refused"
    assert receiver.requests == []


def test_rebinding_after_registration_is_caught_at_send_time(receiver_factory: StartReceiver):
    receiver = receiver_factory()
    resolver, answers = _rebinding_resolver(PUBLIC_IP, "127.0.0.1")
    url = receiver.url(host="rebind.example.com")

    validate_webhook_url(url, WebhookSettings(), resolver=resolver)  # registration: public
    result = deliver(url, _headers(), PAYLOAD, WebhookSettings(), resolver=resolver)

    assert answers == [PUBLIC_IP, "127.0.0.1"]
    assert result.error == "blocked address: loopback"
    assert receiver.requests == []


def test_connection_goes_to_the_resolved_address_with_the_original_host(
    receiver_factory: StartReceiver,
):
    # "rebind.test" exists in no DNS: the request can only arrive through the pinned IP,
    # and a second lookup would return an address that is not even allow-listed.
    receiver = receiver_factory()
    resolver, answers = _rebinding_resolver("127.0.0.1", "10.0.0.5")
    result = deliver(
        receiver.url(host="rebind.test"), _headers(), PAYLOAD, LOOPBACK_OK, resolver=resolver
    )
    assert result.ok and result.connected_ip == "127.0.0.1"
    assert answers == ["127.0.0.1"]
    assert receiver.requests[0].headers["host"] == f"rebind.test:{receiver.port}"


def test_falls_back_to_the_next_checked_address(receiver_factory: StartReceiver):
    receiver = receiver_factory()  # listens on 127.0.0.1 only, so 127.0.0.2 refuses
    result = deliver(
        receiver.url(host="two.test"),
        _headers(),
        PAYLOAD,
        LOOPBACK_OK,
        resolver=lambda host, port: ["127.0.0.2", "127.0.0.1"],
    )
    assert result.ok and result.connected_ip == "127.0.0.1"


def test_unsafe_url_is_an_error_not_an_exception():
    result = deliver("ftp://example.com/", _headers(), PAYLOAD, WebhookSettings())
    assert result.error == "url scheme 'ftp' is not allowed" and result.status_code is None


def test_dns_failure_is_an_error_not_an_exception():
    def resolver(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    result = deliver(
        "https://nx.example.com/", _headers(), PAYLOAD, WebhookSettings(), resolver=resolver
    )
    assert result.error == "host could not be resolved"


# --- HTTPS: pinned IP, SNI and certificate for the URL's host -----------------------------


def _certificate(name: str, issuer_key, issuer_name, key, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ftq test CA")])
    ca_cert = _certificate("ftq test CA", ca_key, ca_name, ca_key, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate("receiver.test", ca_key, ca_name, leaf_key, ca=False)
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture
def tls_receiver(receiver_factory: StartReceiver, tls_material) -> tuple[Receiver, list]:
    server_names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_material["cert"], tls_material["key"])
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    return receiver_factory(reply(200, b"secure"), tls=context), server_names


def _client_context(tls_material) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls_material["ca"]))


def test_https_pins_the_ip_and_verifies_the_hostname(tls_receiver, tls_material):
    receiver, server_names = tls_receiver
    result = deliver(
        receiver.url(host="receiver.test"),
        _headers(),
        PAYLOAD,
        LOOPBACK_OK,
        resolver=lambda host, port: ["127.0.0.1"],
        ssl_context=_client_context(tls_material),
    )
    assert result.ok and result.response_body == "secure", result.error
    assert server_names == ["receiver.test"]
    assert receiver.requests[0].headers["host"] == f"receiver.test:{receiver.port}"


def test_https_certificate_for_another_name_is_refused(tls_receiver, tls_material):
    receiver, _ = tls_receiver
    result = deliver(
        receiver.url(host="impostor.test"),
        _headers(),
        PAYLOAD,
        LOOPBACK_OK,
        resolver=lambda host, port: ["127.0.0.1"],
        ssl_context=_client_context(tls_material),
    )
    assert not result.ok and result.status_code is None
    assert result.error is not None and result.error.startswith("tls certificate verification")
    assert receiver.requests == []


def test_https_untrusted_certificate_is_refused(tls_receiver):
    receiver, _ = tls_receiver
    result = deliver(
        receiver.url(host="receiver.test"),
        _headers(),
        PAYLOAD,
        LOOPBACK_OK,
        resolver=lambda host, port: ["127.0.0.1"],
    )
    assert result.error is not None and result.error.startswith("tls certificate verification")
    assert receiver.requests == []


def test_nothing_is_left_running(receiver_factory: StartReceiver):
    # The deadline timer is cancelled once an attempt ends, success or not.
    receiver = receiver_factory()
    before = threading.active_count()
    for _ in range(5):
        deliver(receiver.url(), _headers(), PAYLOAD, LOOPBACK_OK)
    assert wait_for(lambda: threading.active_count() <= before + 1)
