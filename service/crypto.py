"""Symmetric encryption for secrets ftq must be able to read back (webhook signing secrets).

Fernet tokens under a ``MultiFernet``: the first key encrypts, every key decrypts, so keys
rotate by prepending a new one to ``FTQ_ENCRYPTION_KEYS``. In dev mode, with no keys set,
one key is derived from ``FTQ_SECRET_KEY`` so the embedded default needs no setup
(production refuses to start without ``FTQ_ENCRYPTION_KEYS``; see ``service.config``).
"""

from __future__ import annotations

import base64
import functools
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from service.config import get_settings

__all__ = ["InvalidToken", "decrypt", "encrypt"]

# Domain separation: the derived key must differ from anything else keyed by secret_key.
_DERIVATION_LABEL = b"ftq-encryption-key-v1:"


def derive_key(secret_key: str) -> bytes:
    """A Fernet key derived from the (dev) secret key."""
    digest = hashlib.sha256(_DERIVATION_LABEL + secret_key.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest)


@functools.lru_cache(maxsize=4)
def _multi_fernet(encryption_keys: str, secret_key: str) -> MultiFernet:
    keys = [key.strip() for key in encryption_keys.split(",") if key.strip()]
    if not keys:
        keys = [derive_key(secret_key).decode("ascii")]
    return MultiFernet([Fernet(key) for key in keys])


def _fernet() -> MultiFernet:
    # Keyed on the current values so tests that switch settings get the matching keys.
    settings = get_settings()
    return _multi_fernet(
        settings.encryption_keys.get_secret_value(), settings.secret_key.get_secret_value()
    )


def encrypt(plaintext: str) -> str:
    """A Fernet token (ASCII) for ``plaintext``, under the newest key."""
    return _fernet().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    """The plaintext of a token made by any configured key; raises ``InvalidToken``."""
    return _fernet().decrypt(token.encode("ascii")).decode("utf-8")


def rotate(token: str) -> str:
    """Re-encrypt ``token`` under the newest key (after prepending a key)."""
    return _fernet().rotate(token.encode("ascii")).decode("ascii")
