"""WSGI entry point (gunicorn botplatform.wsgi -c gunicorn.conf.py)."""

from __future__ import annotations

import os
import sys

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botplatform.settings")
try:
    application = get_wsgi_application()
except ImproperlyConfigured as exc:
    # One line instead of a traceback per worker. Exit status 3 is gunicorn's "worker failed
    # to boot": the master stops instead of forking the same failure again and again.
    print(f"configuration error: {exc}", file=sys.stderr, flush=True)
    sys.exit(3)
