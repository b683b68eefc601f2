from __future__ import annotations

from django.apps import AppConfig


class BatchgenConfig(AppConfig):
    name = "batchgen"
    verbose_name = "Batch generation"
    default_auto_field = "django.db.models.BigAutoField"
