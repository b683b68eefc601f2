"""Secrets at rest: bot tokens encrypted, webhook secrets kept only as an HMAC, under
``settings.FIELD_ENCRYPTION_KEYS`` (Fernet keys, read when used). The first key encrypts and
signs; every key decrypts and verifies, so keys can be rotated (docs/design.md, "Secrets at
rest", and ``manage.py rotate_field_keys``).
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

__all__ = ["EncryptedTextField", "decrypt", "encrypt", "webhook_digest",
           "webhook_secret_matches"]


@lru_cache(maxsize=4)
def _ring(keys: tuple[str, ...]) -> tuple[MultiFernet, tuple[bytes, ...]]:
    # A separate signing key per Fernet key: the HMAC never uses the encryption key itself.
    signing = tuple(hashlib.sha256(b"botplatform webhook secret\0" + key.encode()).digest()
                    for key in keys)
    return MultiFernet([Fernet(key) for key in keys]), signing


def _keys() -> tuple[MultiFernet, tuple[bytes, ...]]:
    return _ring(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(text: str) -> str:
    return _keys()[0].encrypt(text.encode()).decode()


def decrypt(token: str) -> str:
    """The plaintext; ImproperlyConfigured (naming the variable, never the value) when no
    configured key opens it."""
    try:
        return _keys()[0].decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "a stored bot token cannot be decrypted with any key in FIELD_ENCRYPTION_KEYS "
            "(was the key that encrypted it removed?)") from None


def _sign(key: bytes, secret: str) -> str:
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def webhook_digest(secret: str) -> str:
    """What is stored for a webhook secret: its HMAC-SHA256 (hex, 64 characters)."""
    return _sign(_keys()[1][0], secret)


def webhook_secret_matches(given: str, digest: str) -> bool:
    """Whether ``given`` is the secret behind ``digest``, compared in constant time; under
    any configured key, so rotating the keys does not cut the webhooks off."""
    if not digest:
        return False
    found = False
    for key in _keys()[1]:
        found |= hmac.compare_digest(_sign(key, given), digest)
    return found


class EncryptedTextField(models.TextField):
    """Plaintext in Python, Fernet ciphertext in the database. It takes no lookups but
    ``isnull``: a ``__startswith`` probe (or any filter) on it is a FieldError, and the
    ciphertext would not match anyway."""

    description = "Text encrypted at rest with FIELD_ENCRYPTION_KEYS"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        return decrypt(value) if value else value

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        return encrypt(value) if value else value

    def get_lookup(self, lookup_name: str) -> Any:
        return super().get_lookup(lookup_name) if lookup_name == "isnull" else None

    def get_transform(self, name: str) -> Any:
        return None
