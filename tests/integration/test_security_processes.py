"""Deploy hardening, CSRF on every POST, and no secret in any page, log line or Redis value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Transactional: replies go out when the outbox row commits, as in production.
pytestmark = pytest.mark.django_db(transaction=True)
PROJECT_DIR = Path(__file__).resolve().parents[2]
PROD_SECRET_KEY = "q8L2vZ-prod-like-secret-key-3fN9xR7tW1mK5pB0cH6jD4sG8yU2eA7oI9lT3nV"


# --- manage.py check --deploy ----------------------------------------------

def run_deploy_check(**env: str) -> subprocess.CompletedProcess:
    """`check --deploy` in a fresh interpreter: settings are read once, at import."""
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp",
               "DJANGO_SETTINGS_MODULE": "botplatform.settings", **env}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=PROJECT_DIR, env=environ, capture_output=True, text=True, timeout=120)


def production_env(**overrides: str) -> dict[str, str]:
    return {"DEBUG": "false", "SECRET_KEY": PROD_SECRET_KEY,
            "ALLOWED_HOSTS": "bots.example.com", "CSRF_TRUSTED_ORIGINS": "https://bots.example.com",
            "METRICS_TOKEN": "metrics-token-for-the-deploy-check",
            "FIELD_ENCRYPTION_KEYS": "kJ8n3Qm2Zp7Yw4Xv1Ls6Tr9Ub0Nc5Hd2Fg8Ej3Ai4Ok=", **overrides}


def test_deploy_check_passes_in_a_production_environment() -> None:
    done = run_deploy_check(**production_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_deploy_check_really_checks_a_weak_secret_key_fails_it() -> None:
    # The same command must fail when something is wrong, or the test above proves nothing.
    done = run_deploy_check(**production_env(SECRET_KEY="too-short"))
    assert done.returncode != 0
    assert "security.W009" in done.stdout + done.stderr


# --- CSRF ------------------------------------------------------------------


# --- secrets never leak ----------------------------------------------------

# The known secrets and their fixture, as the unit tests use them.
from tests.unit.test_security import Secrets, secrets  # noqa: E402,F401,I001
