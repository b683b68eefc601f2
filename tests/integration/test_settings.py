"""Start-up refuses bad environment values, naming the variable and the rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def start_up(**env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in env}
    environ.update(env, DJANGO_SETTINGS_MODULE="botplatform.settings")
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize(("name", "value", "rule"), [
    ("BATCH_MAX_WORKERS", "abc", "is not an integer"),
    ("BATCH_MAX_WORKERS", "0", "below the minimum of 1"),
    ("LLM_PROVIDER", "foo", "is not one of: openai, gemini, groq"),
    ("DATABASE_URL", "nonsense://", "is not a database URL"),
    ("DEBUG", "maybe", "is not a boolean"),
    ("OPENAI_TIMEOUT", "soon", "is not a number"),
    ("TELEGRAM_API_BASE_URL", "ftp://x", "must be an http:// or https:// URL"),
    ("REDIS_URL", "localhost:6379", "must start with redis://"),
    ("OPENAI_TIMEOUT", "nan", "is not a finite number"),
    ("BATCH_RETRY_BACKOFF_SECONDS", "inf", "is not a finite number"),
    ("BATCH_RETRY_BACKOFF_SECONDS", "172800", "above the maximum of 86400.0"),
    ("BATCH_LEASE_SECONDS", "99999999999", "above the maximum of 86400"),
])
def test_a_bad_value_stops_start_up_naming_the_variable(name: str, value: str,
                                                        rule: str) -> None:
    result = start_up(**{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr and rule in result.stderr


def test_secret_key_is_required_once_debug_is_off() -> None:
    result = start_up(DEBUG="false", SECRET_KEY="")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_defaults_start_on_sqlite_without_any_environment() -> None:
    result = start_up(DATABASE_URL="", LLM_PROVIDER="", BATCH_MAX_WORKERS="")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started"


def test_postgres_is_chosen_by_url() -> None:
    environ = {**os.environ, "DATABASE_URL": "postgres://bp@db.example:5433/botplatform",
               "DJANGO_SETTINGS_MODULE": "botplatform.settings"}
    code = ("from django.conf import settings as s; d = s.DATABASES['default'];"
            "print(d['ENGINE'], d['HOST'], d['PORT'], d['NAME'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["django.db.backends.postgresql", "db.example", "5433",
                                  "botplatform"]
