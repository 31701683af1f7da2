"""Signatures as a Standard Webhooks receiver checks them (the reference library)."""

from __future__ import annotations

import base64
import datetime as dt
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from service.webhooks.signing import build_headers, generate_secret, sign

PAYLOAD = b'{"id":"evt_1","object":"event","type":"webhook.test","data":{"n":"\xc3\xa9"}}'


def test_generated_secrets_are_prefixed_32_random_bytes():
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert len({generate_secret() for _ in range(50)}) == 50


def test_headers_verify_with_the_reference_receiver():
    secret = generate_secret()
    headers = build_headers([secret], "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", PAYLOAD)
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "ftq-webhooks/1"
    assert headers["webhook-id"] == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    assert Webhook(secret).verify(PAYLOAD, headers)["data"] == {"n": "\u00e9"}


def test_signature_matches_the_reference_implementation():
    secret = generate_secret()
    timestamp = 1_700_000_000
    expected = Webhook(secret).sign(
        "msg_1", dt.datetime.fromtimestamp(timestamp, dt.UTC), PAYLOAD.decode()
    )
    assert sign([secret], "msg_1", timestamp, PAYLOAD) == expected


def test_rotation_overlap_both_secrets_verify_until_the_old_one_stops_signing():
    old, new = generate_secret(), generate_secret()
    during = build_headers([old, new], "msg_rot", PAYLOAD)
    assert len(during["webhook-signature"].split(" ")) == 2
    assert all(part.startswith("v1,") for part in during["webhook-signature"].split(" "))
    Webhook(old).verify(PAYLOAD, during)
    Webhook(new).verify(PAYLOAD, during)

    after = build_headers([new], "msg_rot", PAYLOAD)
    Webhook(new).verify(PAYLOAD, after)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(PAYLOAD, after)


def test_tampered_body_is_rejected():
    secret = generate_secret()
    headers = build_headers([secret], "msg_t", PAYLOAD)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(PAYLOAD.replace(b"evt_1", b"evt_2"), headers)


def test_tampered_id_or_timestamp_is_rejected():
    secret = generate_secret()
    headers = build_headers([secret], "msg_t", PAYLOAD)
    for field, value in (("webhook-id", "msg_u"), ("webhook-timestamp", str(int(time.time()) - 1))):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(PAYLOAD, {**headers, field: value})


@pytest.mark.parametrize("offset", [-360, +360])
def test_timestamps_six_minutes_off_are_rejected(offset: int):
    secret = generate_secret()
    headers = build_headers([secret], "msg_t", PAYLOAD, now=time.time() + offset)
    with pytest.raises(WebhookVerificationError, match=r"too (old|new)"):
        Webhook(secret).verify(PAYLOAD, headers)


@pytest.mark.parametrize("offset", [-240, +240])
def test_timestamps_within_tolerance_are_accepted(offset: int):
    secret = generate_secret()
    headers = build_headers([secret], "msg_t", PAYLOAD, now=time.time() + offset)
    Webhook(secret).verify(PAYLOAD, headers)


def test_wrong_secret_is_rejected():
    headers = build_headers([generate_secret()], "msg_t", PAYLOAD)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(generate_secret()).verify(PAYLOAD, headers)


def test_secret_without_prefix_signs_the_same():
    secret = generate_secret()
    bare = secret.removeprefix("whsec_")
    assert sign([secret], "msg_1", 1, b"{}") == sign([bare], "msg_1", 1, b"{}")


@pytest.mark.parametrize(
    ("secrets", "msg_id", "timestamp", "error"),
    [
        ([], "msg_1", 1, ValueError),
        ("whsec_abc", "msg_1", 1, TypeError),  # a str is not a list of secrets
        (["whsec_" + base64.b64encode(b"short").decode()], "msg_1", 1, ValueError),
        (["whsec_not base64!"], "msg_1", 1, ValueError),
        (None, "msg.1", 1, ValueError),  # "." would make the signed content ambiguous
        (None, "msg 1", 1, ValueError),
        (None, "", 1, ValueError),
        (None, "msg_1", -1, ValueError),
        (None, "msg_1", 1.5, ValueError),
    ],
)
def test_sign_refuses_bad_input(secrets, msg_id, timestamp, error):
    with pytest.raises(error):
        sign(secrets if secrets is not None else [generate_secret()], msg_id, timestamp, b"{}")
