"""The production web command from docker-compose.yml: gunicorn with DEBUG off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from batchgen.fakes.ports import free_port
from tests.processes import ROOT, database_url, stop, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "production-secret-key-for-the-deploy-test-0123456789-abcdefghijklmnop"
FIELD_KEY = "kJ8n3Qm2Zp7Yw4Xv1Ls6Tr9Ub0Nc5Hd2Fg8Ej3Ai4Ok="  # a Fernet key, for these tests only


def production_env(settings, static_root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(DJANGO_SETTINGS_MODULE="botplatform.settings", DEBUG="false",
               SECRET_KEY=SECRET, ALLOWED_HOSTS="127.0.0.1", SECURE_SSL_REDIRECT="false",
               METRICS_TOKEN="deploy-metrics-token", DATABASE_URL=database_url(),
               REDIS_URL=settings.REDIS_URL, STATIC_ROOT=str(static_root),
               FIELD_ENCRYPTION_KEYS=FIELD_KEY)
    return env


def test_gunicorn_serves_the_site_with_static_files_and_protected_metrics(
        settings, tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    env = production_env(settings, tmp_path / "static")
    collect = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert collect.returncode == 0, collect.stderr
    server = subprocess.Popen(
        gunicorn(port, 2), cwd=ROOT, env=env, stdout=subprocess.PIPE,
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
    # No access log with DEBUG off (ACCESS_LOG unset): a request writes no line.
    assert '"GET /admin/login/ HTTP/1.1" 200' not in output, output


def gunicorn(port: int, workers: int) -> list[str]:
    """The image's CMD (gunicorn.conf.py), on a free port."""
    return [sys.executable, "-m", "gunicorn", "botplatform.wsgi", "-c", "gunicorn.conf.py",
            "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]


def scrape(base: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{base}/metrics",
                     headers={"Authorization": "Bearer deploy-metrics-token"}).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return 0.0


def test_request_counters_sum_every_gunicorn_worker_and_only_rise(
        settings, tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    env = production_env(settings, tmp_path / "static")
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prometheus")
    server = subprocess.Popen(gunicorn(port, 3), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    name = "django_http_responses_total_by_status_view_method_total"
    try:
        wait_for(lambda: _answers(f"{base}/healthz"), 60, "gunicorn to answer")
        seen = [scrape(base, name, view="healthz", status="200")]
        for _ in range(12):
            assert httpx.get(f"{base}/healthz").status_code == 200
            seen.append(scrape(base, name, view="healthz", status="200"))
    finally:
        output = stop(server)
    # Every request is counted once, whichever of the 3 workers answers the scrape.
    assert [b - a for a, b in zip(seen, seen[1:], strict=False)] == [1.0] * 12, (seen, output)
    writers = {path.stem.rsplit("_", 1)[1] for path in (tmp_path / "prometheus").glob("*.db")}
    assert len(writers) >= 2, "the requests never reached a second worker: nothing was summed"


@pytest.mark.parametrize(("variable", "value", "said"), [
    ("SECRET_KEY", "change-me-to-a-long-random-string-of-at-least-fifty-characters-0000",
     "SECRET_KEY is a placeholder"),
    # manage.py's refusal is tests/integration/test_checks_processes.py's; this is the web's.
    ("FIELD_ENCRYPTION_KEYS", "", "FIELD_ENCRYPTION_KEYS must be set when DEBUG is off"),
], ids=["env-example-secret", "no-field-key"])
def test_gunicorn_refuses_a_bad_production_setting_with_one_line(settings, tmp_path: Path,
                                                                 variable: str, value: str,
                                                                 said: str) -> None:
    env = production_env(settings, tmp_path / "static")
    env[variable] = value
    done = subprocess.run(gunicorn(free_port(), 3), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "configuration error" in line]
    assert len(errors) == 1 and said in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.TransportError:
        return False
    return True
