"""With DEBUG off, the placeholders of .env.example and a weak METRICS_TOKEN stop start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
                  DATABASE_URL="")
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
