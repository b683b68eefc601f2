"""With DEBUG off, the placeholders of .env.example and a weak METRICS_TOKEN stop start-up."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from botplatform.checks import configuration_errors, plain_http_origins

ROOT = Path(__file__).resolve().parents[2]
GOOD_SECRET = "q8L2vZ-prod-like-secret-key-3fN9xR7tW1mK5pB0cH6jD4sG8yU2eA7oI9lT3nV"
GOOD_TOKEN = "metrics-token-for-production-0123"


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def config(**values: object) -> SimpleNamespace:
    return SimpleNamespace(**{"DEBUG": False, "SECRET_KEY": GOOD_SECRET,
                              "METRICS_TOKEN": GOOD_TOKEN, "CSRF_TRUSTED_ORIGINS": [], **values})


def test_a_production_configuration_passes() -> None:
    assert configuration_errors(config()) == []


def test_the_placeholders_of_env_example_are_refused_naming_each_variable() -> None:
    example = env_example()
    errors = configuration_errors(config(SECRET_KEY=example["SECRET_KEY"],
                                         METRICS_TOKEN=example["METRICS_TOKEN"]))
    assert [error.split(" ", 1)[0] for error in errors] == ["SECRET_KEY", "METRICS_TOKEN"]
    assert "placeholder" in errors[0] and "placeholder" in errors[1]


@pytest.mark.parametrize(("token", "rule"), [
    ("", "METRICS_TOKEN is empty"),
    ("short-token", "METRICS_TOKEN has 11 characters"),
])
def test_an_empty_or_short_metrics_token_is_refused(token: str, rule: str) -> None:
    [error] = configuration_errors(config(METRICS_TOKEN=token))
    assert error.startswith(rule) and "at least 16 characters" in error


def test_a_short_secret_key_is_refused() -> None:
    [error] = configuration_errors(config(SECRET_KEY="x" * 20))
    assert error.startswith("SECRET_KEY has 20 characters") and "at least 50" in error


def test_nothing_is_refused_while_debug_is_on() -> None:
    assert configuration_errors(config(DEBUG=True, SECRET_KEY="change-me", METRICS_TOKEN="")) == []


def test_plain_http_origins_are_flagged_when_cookies_are_secure() -> None:
    origins = ["https://bots.example.com", "http://10.0.0.5:8000"]
    assert plain_http_origins(config(CSRF_TRUSTED_ORIGINS=origins)) == ["http://10.0.0.5:8000"]
