from __future__ import annotations

from django.urls import path

from batchgen.intake.webhook import webhook

app_name = "intake"
urlpatterns = [path("webhook/<int:bot_id>/", webhook, name="webhook")]
