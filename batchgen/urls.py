"""Dashboard URLs, mounted by the project at /dashboard/."""

from __future__ import annotations

from django.urls import path

from batchgen import views

app_name = "dashboard"

urlpatterns = [
    path("", views.index, name="index"),
    path("live/", views.live, name="live"),
    path("batches/<int:run_id>/", views.batch_detail, name="batch_detail"),
    path("api/batches/", views.api_batches, name="api_batches"),
    path("requeue/", views.requeue, name="requeue"),
    path("pause/", views.pause, name="pause"),
]
