from __future__ import annotations

from django.apps import AppConfig


class BotplatformConfig(AppConfig):
    """The project itself as an app, so that its system checks are registered."""

    name = "botplatform"

    def ready(self) -> None:
        from botplatform import checks  # noqa: F401  (registers the checks)
