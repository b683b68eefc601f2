"""A scan or a webhook flood does not fill the logs: django.request's 4xx warnings follow
LOG_LEVEL, and gunicorn's access log is off in production unless ACCESS_LOG=true."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOUR_XX = ("import django; django.setup(); from django.test import Client; c = Client(); "
           "[c.get('/telegram/webhook/1/') for _ in range(3)]; "
           "c.get('/no-such-page/'); print('done')")


# A real webhook 403: a bot with a webhook secret in a migrated database, a wrong secret sent.
WRONG_SECRET = ("import django; django.setup(); from django.core.management import call_command; "
                "call_command('migrate', verbosity=0); "
                "from batchgen.models import Bot; from batchgen.models.secrets import "
                "webhook_digest; bot = Bot.objects.create(name='hooked', telegram_token='1:ABC', "
                "webhook_secret=webhook_digest('right')); from django.test import Client; "
                "answer = Client().post(f'/telegram/webhook/{bot.id}/', data=b'{}', "
                "content_type='application/json', HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN='wrong'); "
                "print(answer.status_code)")


def run(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    environ.update(DJANGO_SETTINGS_MODULE="botplatform.settings", **{"DATABASE_URL": "", **env})
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_with_log_level_error_a_4xx_writes_no_line() -> None:
    done = run(FOUR_XX, LOG_LEVEL="ERROR")
    assert done.stdout.strip() == "done", done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize(("level", "logged"), [("ERROR", False), ("WARNING", True)])
def test_a_webhook_403_for_a_wrong_secret_logs_no_warning_at_log_level_error(
        tmp_path, level: str, logged: bool) -> None:
    done = run(WRONG_SECRET, LOG_LEVEL=level, DATABASE_URL=f"sqlite:///{tmp_path / 'db'}")
    assert done.stdout.strip() == "403", done.stderr
    # At WARNING both the webhook's line and django.request's are there: the ERROR case
    # would pass for nothing if this 403 never logged at all.
    assert ("WARNING batchgen.webhook webhook: bot 1: wrong or missing secret token"
            in done.stderr) is logged
    assert ("WARNING django.request Forbidden: /telegram/webhook/1/" in done.stderr) is logged
    assert ("WARNING" in done.stderr) is logged


def test_with_log_level_warning_a_4xx_is_still_logged() -> None:
    # The same requests, the default-ish level: the test above would pass for nothing if
    # these requests never logged at all.
    done = run(FOUR_XX, LOG_LEVEL="WARNING")
    assert "WARNING django.request Method Not Allowed (GET): /telegram/webhook/1/" in done.stderr
    assert "WARNING django.request Not Found: /no-such-page/" in done.stderr


@pytest.mark.parametrize(("env", "accesslog"), [
    ({"DEBUG": "false"}, "None"),
    ({"DEBUG": "false", "ACCESS_LOG": "true"}, "-"),
    ({"DEBUG": "true"}, "-"),
    ({"DEBUG": "true", "ACCESS_LOG": "false"}, "None"),
])
def test_gunicorn_writes_an_access_log_only_when_asked_in_production(tmp_path, env,
                                                                     accesslog) -> None:
    code = "import runpy; print(runpy.run_path('gunicorn.conf.py')['accesslog'])"
    done = run(code, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
               **{"ACCESS_LOG": "", **env})
    assert done.stdout.strip() == accesslog, done.stderr


def test_a_bad_access_log_value_stops_gunicorn_in_one_line(tmp_path) -> None:
    code = "import runpy; runpy.run_path('gunicorn.conf.py')"
    done = run(code, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "p"), ACCESS_LOG="loud")
    assert done.returncode != 0
    assert done.stderr.strip().startswith("configuration error: ACCESS_LOG='loud' is not a "
                                          "boolean")
