"""The admin's base class: no changelist filter, lookup or search ever touches a secret, and
none carries a NUL to the database. Django lets a changelist filter on any field from the
query string, so ``?telegram_token__startswith=12`` let a staff user recover a token one
character at a time; such a lookup, through any relation, is refused here (Django answers 400),
and the encrypted field refuses it as well. PostgreSQL refuses NUL in any text parameter, so a
changelist query holding one is refused (400) and a search term holding one matches nothing.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

from batchgen.core.text import field_with_nul

__all__ = ["SECRET_FIELDS", "ProtectedAdmin"]

SECRET_FIELDS = frozenset({"telegram_token", "webhook_secret"})
NUL = "\x00"


class ProtectedAdmin(admin.ModelAdmin):
    def lookup_allowed(self, lookup: str, value: Any, request: HttpRequest) -> bool:
        if SECRET_FIELDS.intersection(lookup.split(LOOKUP_SEP)):
            return False
        return super().lookup_allowed(lookup, value, request)

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        return [name for name in super().get_search_fields(request)
                if not SECRET_FIELDS.intersection(name.lstrip("^=@").split(LOOKUP_SEP))]

    def changelist_view(self, request: HttpRequest,
                        extra_context: dict[str, str] | None = None) -> HttpResponse:
        # Filters, lookups, search, ordering: every one of them may reach a text parameter.
        if field_with_nul(request.GET) is not None:
            return HttpResponseBadRequest("A query parameter holds NUL (\\x00): refused.",
                                          content_type="text/plain")
        return super().changelist_view(request, extra_context)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet,
                           search_term: str) -> tuple[QuerySet, bool]:
        # The autocomplete's door (the changelist's is above): no stored text holds a NUL.
        if NUL in search_term:
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)
