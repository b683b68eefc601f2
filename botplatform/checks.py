"""Start-up checks of the production configuration.

They run as Django system checks (every ``manage.py`` command, and ``check --deploy``) and
from ``gunicorn.conf.py`` before gunicorn forks its workers, so a deployment on
``.env.example``'s placeholders stops with one line naming the variable and the rule.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

# The values .env.example ships and the development key: known to everybody who reads the repo.
PLACEHOLDERS = {
    "change-me-to-a-long-random-string-of-at-least-fifty-characters-0000",
    "dev-only-insecure-secret-key-change-me-in-production-0123456789",
    "change-me",
}
MIN_SECRET_KEY_LENGTH = 50
MIN_METRICS_TOKEN_LENGTH = 16
GENERATE = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"


def _placeholder(value: str) -> bool:
    return value in PLACEHOLDERS or "change-me" in value.lower()


def configuration_errors(config: Any = settings) -> list[str]:
    """One line per unsafe production setting; none while DEBUG is on."""
    if config.DEBUG:
        return []
    errors = []
    secret = config.SECRET_KEY or ""
    if _placeholder(secret):
        errors.append(f"SECRET_KEY is a placeholder from .env.example or the development "
                      f"key; with DEBUG off set a random value ({GENERATE})")
    elif len(secret) < MIN_SECRET_KEY_LENGTH:
        errors.append(f"SECRET_KEY has {len(secret)} characters; with DEBUG off it needs at "
                      f"least {MIN_SECRET_KEY_LENGTH} ({GENERATE})")
    token = getattr(config, "METRICS_TOKEN", "") or ""
    if _placeholder(token) or len(token) < MIN_METRICS_TOKEN_LENGTH:
        what = "is a placeholder" if _placeholder(token) else (
            f"has {len(token)} characters" if token else "is empty")
        errors.append(f"METRICS_TOKEN {what}; with DEBUG off /metrics needs a random token of "
                      f"at least {MIN_METRICS_TOKEN_LENGTH} characters ({GENERATE})")
    return errors


def plain_http_origins(config: Any = settings) -> list[str]:
    """CSRF origins served over http:// while cookies are Secure: login there gets a 403."""
    if config.DEBUG:
        return []
    return [origin for origin in getattr(config, "CSRF_TRUSTED_ORIGINS", [])
            if origin.startswith("http://")]


@register(Tags.security)
def check_production_secrets(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    return [Error(message, id="botplatform.E001") for message in configuration_errors()]


@register(Tags.security)
def check_plain_http_origins(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    return [Warning(f"CSRF_TRUSTED_ORIGINS has {origin}: with DEBUG off the session and CSRF "
                    "cookies are Secure, so a login over plain HTTP fails with a 403",
                    hint="serve it over HTTPS (see README, 'Behind a reverse proxy / TLS')",
                    id="botplatform.W001")
            for origin in plain_http_origins()]
