"""gunicorn settings: ``gunicorn botplatform.wsgi -c gunicorn.conf.py`` (the image's CMD).

Two things only the master can do before it forks the workers:

- Check the configuration once, and stop with one line naming the variable and the rule
  rather than one traceback per worker.
- Put prometheus_client in multiprocess mode: each worker writes its request counters to
  files in ``PROMETHEUS_MULTIPROC_DIR`` and a scrape, answered by any worker, sums them all.
  Without it each worker counts only the requests it served, and successive scrapes go up
  and down as the load balancer picks workers.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

wsgi_app = "botplatform.wsgi"


def _access_log() -> str | None:
    """A line per request on stdout when ACCESS_LOG is true; by default only with DEBUG on.
    In production a scan or a webhook flood filled the logs (a proxy in front logs requests
    anyway)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for the `gunicorn` script
    from botplatform.env import env_bool

    return "-" if env_bool("ACCESS_LOG", env_bool("DEBUG", True)) else None


try:
    accesslog = _access_log()
except Exception as exc:  # ImproperlyConfigured: one line, as on_starting prints them
    print(f"configuration error: {exc}", file=sys.stderr, flush=True)
    sys.exit(1)


def _multiprocess_dir() -> str:
    """A fresh directory: counters left by a previous run would be added to this one's."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
    else:
        path = tempfile.mkdtemp(prefix="botplatform-prometheus-")
    return path


# Set before any worker imports prometheus_client (it reads the variable at import).
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _multiprocess_dir()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botplatform.settings")


def on_starting(server: object) -> None:
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018  (reads and validates the environment)
        from botplatform.checks import configuration_errors

        errors = configuration_errors(settings)
    except ImproperlyConfigured as exc:
        errors = [str(exc)]
    for error in errors:
        print(f"configuration error: {error}", file=sys.stderr, flush=True)
    if errors:
        sys.exit(1)


def child_exit(server: object, worker: object) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
