from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from batchgen.dashboard.health import healthz
from batchgen.dashboard.scrape import metrics_view
from batchgen.views import favicon

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="dashboard:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("dashboard/", include("batchgen.urls")),
    path("telegram/", include("batchgen.webhook")),
    # Replaces django_prometheus.urls: the same registry plus the Redis-backed
    # figures from every worker, behind METRICS_TOKEN in production.
    path("metrics", metrics_view, name="metrics"),
    path("healthz", healthz, name="healthz"),
    # Browsers ask for /favicon.ico on pages that name no icon (the admin's, raw files).
    path("favicon.ico", favicon, name="favicon"),
]
