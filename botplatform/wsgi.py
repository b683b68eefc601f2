"""WSGI entry point (gunicorn botplatform.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botplatform.settings")
application = get_wsgi_application()
