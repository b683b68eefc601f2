"""Tiny helpers that read the environment and fail loudly on bad values.

Each helper raises ``ImproperlyConfigured`` naming the variable and what it
accepts, so a typo in a deployment stops start-up instead of running with a
silently different configuration.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import overload

from django.core.exceptions import ImproperlyConfigured

TRUE_VALUES = {"1", "true", "yes", "on"}
FALSE_VALUES = {"0", "false", "no", "off"}
# No number we read means anything above a billion (about 31 years in seconds), and larger
# ones overflow later, far from their cause: ``now + timedelta(seconds=...)`` past year 9999,
# socket and lock timeouts past ~9.2e9 s. So every number has this ceiling unless a tighter
# ``maximum`` is given.
LARGEST = 10**9


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name: str, default: str = "") -> str:
    value = _raw(name)
    return default if value is None else value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in TRUE_VALUES:
        return True
    if value.lower() in FALSE_VALUES:
        return False
    raise ImproperlyConfigured(
        f"{name}={value!r} is not a boolean; use one of: "
        f"{', '.join(sorted(TRUE_VALUES | FALSE_VALUES))}"
    )


@overload
def env_int(name: str, default: int, *, minimum: int | None = None,
            maximum: int = LARGEST) -> int: ...
@overload
def env_int(name: str, default: None, *, minimum: int | None = None,
            maximum: int = LARGEST) -> int | None: ...
def env_int(name: str, default: int | None, *, minimum: int | None = None,
            maximum: int = LARGEST) -> int | None:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
    _check_range(name, number, minimum, maximum)
    return number


def env_float(name: str, default: float, *, minimum: float | None = None,
              maximum: float = LARGEST) -> float:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None
    if not math.isfinite(number):
        # float() accepts "nan", "inf" and "1e400"; each compares false or true with every
        # bound, so it would pass the range check and fail later without the variable's name.
        raise ImproperlyConfigured(f"{name}={value!r} is not a finite number")
    _check_range(name, number, minimum, maximum)
    return number


def _check_range(name: str, number: float, minimum: float | None, maximum: float) -> None:
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum of {minimum}")
    if number > maximum:
        raise ImproperlyConfigured(f"{name}={number} is above the maximum of {maximum}")


def env_choice(name: str, default: str, choices: Iterable[str]) -> str:
    allowed = list(choices)
    value = env_str(name, default).lower()
    if value not in allowed:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of: {', '.join(allowed)}")
    return value


def env_list(name: str, default: Iterable[str] = ()) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default)
    return [part.strip() for part in value.split(",") if part.strip()]


def env_url(name: str, default: str) -> str:
    value = env_str(name, default).rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"{name}={value!r} must be an http:// or https:// URL")
    return value


def env_fernet_keys(name: str, debug: bool, secret_key: str) -> list[str]:
    """Comma-separated Fernet keys, the first one used to encrypt. Required with DEBUG off;
    under DEBUG, unset means one development key derived from SECRET_KEY, so tests and the
    demo need no configuration (and their tokens are no secret)."""
    import base64
    import hashlib

    from cryptography.fernet import Fernet

    keys = env_list(name)
    if not keys and not debug:
        raise ImproperlyConfigured(
            f"{name} must be set when DEBUG is off: it encrypts the bot tokens "
            "(python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())')")
    if not keys:
        digest = hashlib.sha256(b"botplatform development field key\0" + secret_key.encode())
        return [base64.urlsafe_b64encode(digest.digest()).decode()]
    for number, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: key {number} of {len(keys)} is not a Fernet key (32 url-safe "
                "base64-encoded bytes, as Fernet.generate_key() gives)") from None
    return keys


def proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """``X-Forwarded-Proto`` -> ``("HTTP_X_FORWARDED_PROTO", "https")``; unset -> None."""
    value = _raw(name)
    if value is None:
        return None
    header = value.upper().replace("-", "_")
    if not header.replace("_", "").isalnum():
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a header name (e.g. X-Forwarded-Proto)")
    return ("HTTP_" + header.removeprefix("HTTP_"), "https")
