from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from service import crypto
from service.config import reset_settings_cache


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FTQ_ENCRYPTION_KEYS", raising=False)
    monkeypatch.setenv("FTQ_SECRET_KEY", "unit-test-secret")
    reset_settings_cache()
    yield
    reset_settings_cache()


def test_round_trip_with_the_dev_derived_key():
    token = crypto.encrypt("whsec_abc")
    assert "whsec_abc" not in token
    assert crypto.decrypt(token) == "whsec_abc"
    # The same secret key derives the same Fernet key, so another process can decrypt.
    assert Fernet(crypto.derive_key("unit-test-secret")).decrypt(token.encode()) == b"whsec_abc"


def test_a_different_secret_key_cannot_decrypt(monkeypatch: pytest.MonkeyPatch):
    token = crypto.encrypt("payload")
    monkeypatch.setenv("FTQ_SECRET_KEY", "another-secret")
    reset_settings_cache()
    with pytest.raises(crypto.InvalidToken):
        crypto.decrypt(token)


def test_configured_keys_rotate_by_prepending(monkeypatch: pytest.MonkeyPatch):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("FTQ_ENCRYPTION_KEYS", old)
    reset_settings_cache()
    token = crypto.encrypt("secret")
    assert Fernet(old).decrypt(token.encode()) == b"secret"

    monkeypatch.setenv("FTQ_ENCRYPTION_KEYS", f"{new}, {old}")
    reset_settings_cache()
    assert crypto.decrypt(token) == "secret"  # old tokens still readable
    rotated = crypto.rotate(token)
    assert Fernet(new).decrypt(rotated.encode()) == b"secret"
    assert crypto.decrypt(crypto.encrypt("x")) == "x"
    with pytest.raises(Exception):  # noqa: B017  (new tokens are under the new key only)
        Fernet(old).decrypt(crypto.encrypt("y").encode())
