"""The production web command from docker-compose.yml: gunicorn with DEBUG off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from batchgen.fakes.ports import free_port
from tests.processes import ROOT, database_url, stop, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "production-secret-key-for-the-deploy-test-0123456789-abcdefghijklmnop"


def production_env(settings, static_root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(DJANGO_SETTINGS_MODULE="botplatform.settings", DEBUG="false",
               SECRET_KEY=SECRET, ALLOWED_HOSTS="127.0.0.1", SECURE_SSL_REDIRECT="false",
               METRICS_TOKEN="deploy-metrics-token", DATABASE_URL=database_url(),
               REDIS_URL=settings.REDIS_URL, STATIC_ROOT=str(static_root))
    return env


def test_gunicorn_serves_the_site_with_static_files_and_protected_metrics(
        settings, tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    env = production_env(settings, tmp_path / "static")
    collect = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert collect.returncode == 0, collect.stderr
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "botplatform.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "2"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{base}/admin/login/"), 60, "gunicorn to answer")
        assert httpx.get(f"{base}/admin/login/").status_code == 200
        css = httpx.get(f"{base}/static/dashboard/dashboard.css")
        assert css.status_code == 200 and "text/css" in css.headers["content-type"]
        dashboard = httpx.get(f"{base}/dashboard/")
        assert dashboard.status_code == 302
        assert dashboard.headers["location"].startswith("/admin/login/")
        assert httpx.get(f"{base}/metrics").status_code == 401
        scrape = httpx.get(f"{base}/metrics",
                           headers={"Authorization": "Bearer deploy-metrics-token"})
        assert scrape.status_code == 200 and "batchgen_queue_items" in scrape.text
        cookie = httpx.get(f"{base}/admin/login/").headers.get("set-cookie", "")
        assert "csrftoken=" in cookie and "; Secure" in cookie  # CSRF_COOKIE_SECURE
    finally:
        output = stop(server)
    assert "Traceback" not in output, output


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.TransportError:
        return False
    return True
