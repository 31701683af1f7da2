"""Team provider URLs under the SSRF policy: refused at registration, and every connection
the SDK opens is checked and pinned (a name that resolves inward later gets nothing)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx2
import pytest

from service import netguard
from service.config import reset_settings_cache
from service.errors import InvalidRequest
from service.providers import credentials


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def listener() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_port)
    server.shutdown()
    server.server_close()


def test_guarded_client_refuses_loopback_unless_allow_listed(listener: int) -> None:
    refused = netguard.guarded_http_client(
        netguard.Policy(allow_setting="FTQ_PROVIDER_ALLOWED_NETWORKS"), timeout=5
    )
    with pytest.raises(httpx2.ConnectError, match="FTQ_PROVIDER_ALLOWED_NETWORKS"):
        refused.get(f"http://127.0.0.1:{listener}/")
    allowed = netguard.guarded_http_client(
        netguard.Policy(allowed_networks=("127.0.0.0/8",)), timeout=5
    )
    assert allowed.get(f"http://127.0.0.1:{listener}/").text == "ok"


def test_a_name_is_resolved_checked_and_pinned_at_connect_time(listener: int) -> None:
    # A public-looking name that resolves to loopback at connect time (DNS rebinding).
    rebinding = netguard.guarded_http_client(
        netguard.Policy(), timeout=5, resolver=lambda host, port: ["127.0.0.1"]
    )
    with pytest.raises(httpx2.ConnectError, match="loopback"):
        rebinding.get(f"http://api.example.com:{listener}/")
    # Allowed, the connection goes to the checked address, never to a second lookup.
    pinned = netguard.guarded_http_client(
        netguard.Policy(allowed_networks=("127.0.0.0/8",)),
        timeout=5,
        resolver=lambda host, port: ["127.0.0.1"],
    )
    assert pinned.get(f"http://api.example.com:{listener}/").text == "ok"
    mixed = netguard.guarded_http_client(
        netguard.Policy(allowed_networks=("127.0.0.0/8",)),
        timeout=5,
        resolver=lambda host, port: ["127.0.0.1", "10.0.0.7"],
    )
    with pytest.raises(httpx2.ConnectError, match="private"):
        mixed.get(f"http://api.example.com:{listener}/")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080/v1", "loopback"),
        ("http://localhost/v1", "loopback"),
        ("http://169.254.169.254/latest", "cloud metadata"),
        ("http://10.1.2.3/v1", "private"),
        ("http://[::1]/v1", "loopback"),
        ("http://0x7f000001/v1", "loopback"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
    ],
)
def test_registration_refuses_inward_urls_and_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    monkeypatch.delenv("FTQ_PROVIDER_ALLOWED_NETWORKS", raising=False)
    reset_settings_cache()
    try:
        with pytest.raises(InvalidRequest) as caught:
            credentials._normalise("openai", {"base_url": url})
        assert caught.value.param == "base_url"
        assert caught.value.code == "unsafe_provider_url"
        assert reason in caught.value.message
        with pytest.raises(InvalidRequest) as azure:
            credentials._normalise("azure_openai", {"endpoint": url, "api_version": "2024-10-21"})
        assert azure.value.param == "endpoint"
        if reason in ("loopback", "private"):
            assert "FTQ_PROVIDER_ALLOWED_NETWORKS" in caught.value.message
    finally:
        reset_settings_cache()


def test_operators_opt_networks_back_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTQ_PROVIDER_ALLOWED_NETWORKS", "127.0.0.0/8, 10.0.0.0/8")
    reset_settings_cache()
    try:
        config = credentials._normalise("openai", {"base_url": "http://127.0.0.1:8765/v1/"})
        assert config["base_url"] == "http://127.0.0.1:8765/v1"
        with pytest.raises(InvalidRequest):
            credentials._normalise("openai", {"base_url": "http://192.168.0.10/v1"})
    finally:
        reset_settings_cache()


def test_an_sdk_client_from_team_credentials_is_refused_with_the_reason(
    listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openai

    monkeypatch.delenv("FTQ_PROVIDER_ALLOWED_NETWORKS", raising=False)
    reset_settings_cache()
    try:
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{listener}/v1", api_key="sk-team", max_retries=0
        )
        with pytest.raises(openai.APIConnectionError) as caught:
            credentials.guarded(client).models.list()
        reason = netguard.refusal_in(caught.value)
        assert reason is not None and "loopback" in reason
        azure = openai.AzureOpenAI(
            azure_endpoint=f"http://127.0.0.1:{listener}",
            api_key="az-team",
            api_version="2024-10-21",
            max_retries=0,
        )
        with pytest.raises(openai.APIConnectionError) as refused:
            credentials.guarded(azure).models.list()
        assert netguard.refusal_in(refused.value) is not None
        # An ordinary network failure is not mistaken for a refusal.
        assert netguard.refusal_in(ConnectionRefusedError()) is None
    finally:
        reset_settings_cache()
