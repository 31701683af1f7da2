"""Which webhook URLs and addresses ftq may send to (server-side request forgery policy).

The policy itself lives in ``service.netguard`` (shared with team provider credentials);
this module binds it to ``WebhookSettings``. Two layers, both needed:

* ``validate_webhook_url`` at registration (and again at every send) refuses URLs that are
  malformed, ambiguous or point at a non-public address, either literally (in any of the
  spellings a resolver or browser would accept) or through DNS.
* At send time ``service.webhooks.http.deliver`` resolves the host once, checks every
  address with ``classify_address`` and connects to that checked address, so a name that
  re-resolves to an internal address later (DNS rebinding) never gets a connection.

Networks in ``WebhookSettings.allowed_networks`` (``FTQ_WEBHOOKS__ALLOWED_NETWORKS``) are
opted back in (development and tests); a refusal names that setting in its ``hint``.
"""

from __future__ import annotations

from collections.abc import Iterable

from service import netguard
from service.netguard import (
    BLOCKED_ADDRESS,
    IPAddress,
    IPNetwork,
    Resolver,
    ValidatedURL,
    canonical_address,
    classify_address,
    parse_legacy_ipv4,
    parse_networks,
    resolve_host,
)
from service.webhooks.settings import WebhookSettings

ALLOW_SETTING = "FTQ_WEBHOOKS__ALLOWED_NETWORKS"

__all__ = [
    "ALLOW_SETTING",
    "BLOCKED_ADDRESS",
    "IPAddress",
    "IPNetwork",
    "Resolver",
    "UnsafeWebhookURL",
    "ValidatedURL",
    "canonical_address",
    "check_resolved",
    "classify_address",
    "parse_legacy_ipv4",
    "parse_networks",
    "policy_for",
    "resolve_host",
    "validate_webhook_url",
]


class UnsafeWebhookURL(netguard.UnsafeURL):
    """A webhook URL ftq refuses to send to. The API renders it as a 400 on ``param``."""

    code = "unsafe_webhook_url"

    @classmethod
    def of(cls, refused: netguard.UnsafeURL) -> UnsafeWebhookURL:
        return cls(refused.reason, param=refused.param, hint=refused.hint)


def policy_for(settings: WebhookSettings) -> netguard.Policy:
    return netguard.Policy(
        allowed_networks=tuple(settings.allowed_networks),
        allowed_schemes=tuple(settings.allowed_schemes),
        allowed_ports=tuple(settings.allowed_ports) if settings.allowed_ports is not None else None,
        allow_setting=ALLOW_SETTING,
    )


def check_resolved(addresses: Iterable[str], settings: WebhookSettings) -> tuple[str, ...]:
    """Every resolved address, canonical, if all are allowed; else UnsafeWebhookURL."""
    try:
        return netguard.check_resolved(addresses, policy_for(settings))
    except netguard.UnsafeURL as refused:
        raise UnsafeWebhookURL.of(refused) from None


def validate_webhook_url(
    url: str,
    settings: WebhookSettings,
    *,
    resolve: bool = True,
    resolver: Resolver | None = None,
) -> ValidatedURL:
    """Check ``url`` against the policy and return it split for sending.

    Raises ``UnsafeWebhookURL`` (``param="url"``) for anything but an ``http(s)`` URL,
    without credentials, on an allowed port, whose host is a public address or (with
    ``resolve``) a name all of whose addresses are public. ``localhost`` and
    ``*.localhost`` are loopback by definition (RFC 6761) and are never looked up.
    """
    try:
        return netguard.validate_url(url, policy_for(settings), resolve=resolve, resolver=resolver)
    except netguard.UnsafeURL as refused:
        raise UnsafeWebhookURL.of(refused) from None
