"""With DEBUG off, the placeholders of .env.example and a weak METRICS_TOKEN stop start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOOD_SECRET = "q8L2vZ-prod-like-secret-key-3fN9xR7tW1mK5pB0cH6jD4sG8yU2eA7oI9lT3nV"
GOOD_TOKEN = "metrics-token-for-production-0123"
FIELD_KEY = "kJ8n3Qm2Zp7Yw4Xv1Ls6Tr9Ub0Nc5Hd2Fg8Ej3Ai4Ok="  # a Fernet key, for these tests only


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    environ.update(env, DJANGO_SETTINGS_MODULE="botplatform.settings")
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_fails_on_the_env_example_secrets() -> None:
    example = env_example()
    done = manage("check", "--deploy", DEBUG="false", SECRET_KEY=example["SECRET_KEY"],
                  METRICS_TOKEN=example["METRICS_TOKEN"], ALLOWED_HOSTS="bots.example.com",
                  DATABASE_URL="", FIELD_ENCRYPTION_KEYS=FIELD_KEY)
    assert done.returncode != 0
    assert "(botplatform.E001) SECRET_KEY is a placeholder" in done.stderr
    assert "(botplatform.E001) METRICS_TOKEN is a placeholder" in done.stderr


def test_a_bad_variable_gives_one_line_not_a_traceback_for_any_command() -> None:
    done = manage("tick", BATCH_MAX_WORKERS="abc")
    assert done.returncode != 0
    assert done.stderr.strip() == "configuration error: BATCH_MAX_WORKERS='abc' is not an integer"


def test_proxy_ssl_header_allowed_hosts_and_csrf_origins_come_from_the_environment() -> None:
    code = ("from django.conf import settings as s; print(s.SECURE_PROXY_SSL_HEADER, "
            "s.ALLOWED_HOSTS, s.CSRF_TRUSTED_ORIGINS)")
    environ = {**os.environ, "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
               "ALLOWED_HOSTS": "bots.example.com", "CSRF_TRUSTED_ORIGINS": "https://bots.example.com",
               "DJANGO_SETTINGS_MODULE": "botplatform.settings"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == ("('HTTP_X_FORWARDED_PROTO', 'https') ['bots.example.com'] "
                                  "['https://bots.example.com']")


def test_a_batch_route_fallback_not_below_its_slack_is_refused_in_one_line() -> None:
    done = manage("tick", BATCH_ROUTE_MIN_SLACK_SECONDS="600", BATCH_ROUTE_FALLBACK_SECONDS="600")
    assert done.returncode != 0
    assert done.stderr.strip() == ("configuration error: BATCH_ROUTE_FALLBACK_SECONDS=600 must "
                                   "be less than BATCH_ROUTE_MIN_SLACK_SECONDS=600")


def test_with_debug_off_start_up_without_the_field_key_is_refused_in_one_line() -> None:
    done = manage("check", DEBUG="false", SECRET_KEY=GOOD_SECRET, METRICS_TOKEN=GOOD_TOKEN,
                  DATABASE_URL="", FIELD_ENCRYPTION_KEYS="")
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("configuration error: FIELD_ENCRYPTION_KEYS must be set when DEBUG "
                           "is off: it encrypts the bot tokens")


def test_a_field_key_that_is_not_a_fernet_key_is_refused_without_echoing_it() -> None:
    done = manage("check", DEBUG="false", SECRET_KEY=GOOD_SECRET, METRICS_TOKEN=GOOD_TOKEN,
                  DATABASE_URL="", FIELD_ENCRYPTION_KEYS=f"{FIELD_KEY},not-a-key-SECRETISH")
    assert done.returncode != 0
    assert done.stderr.strip() == (
        "configuration error: FIELD_ENCRYPTION_KEYS: key 2 of 2 is not a Fernet key (32 "
        "url-safe base64-encoded bytes, as Fernet.generate_key() gives)")


def test_with_debug_on_a_development_key_is_derived_so_nothing_needs_configuring() -> None:
    code = "from django.conf import settings as s; print(len(s.FIELD_ENCRYPTION_KEYS))"
    environ = {**os.environ, "DEBUG": "true", "FIELD_ENCRYPTION_KEYS": "",
               "DJANGO_SETTINGS_MODULE": "botplatform.settings"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "1", out.stderr


def test_the_env_example_field_key_placeholder_is_refused_in_one_line() -> None:
    done = manage("check", DEBUG="false", SECRET_KEY=GOOD_SECRET, METRICS_TOKEN=GOOD_TOKEN,
                  DATABASE_URL="", FIELD_ENCRYPTION_KEYS=env_example()["FIELD_ENCRYPTION_KEYS"])
    assert done.returncode != 0
    assert done.stderr.strip().startswith("configuration error: FIELD_ENCRYPTION_KEYS: key 1 of "
                                          "1 is not a Fernet key")
