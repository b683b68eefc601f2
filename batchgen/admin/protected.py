"""The admin's base class: no changelist filter, lookup or search ever touches a secret. Django
lets a changelist filter on any field from the query string, so
``?telegram_token__startswith=12`` let a staff user recover a token one character at a time;
such a lookup, through any relation, is refused here (Django answers 400), and the encrypted
field refuses it as well.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest

__all__ = ["SECRET_FIELDS", "ProtectedAdmin"]

SECRET_FIELDS = frozenset({"telegram_token", "webhook_secret"})


class ProtectedAdmin(admin.ModelAdmin):
    def lookup_allowed(self, lookup: str, value: Any, request: HttpRequest) -> bool:
        if SECRET_FIELDS.intersection(lookup.split(LOOKUP_SEP)):
            return False
        return super().lookup_allowed(lookup, value, request)

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        return [name for name in super().get_search_fields(request)
                if not SECRET_FIELDS.intersection(name.lstrip("^=@").split(LOOKUP_SEP))]
