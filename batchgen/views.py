"""Staff dashboard views: parse the request, call batchgen.dashboard.queries, render."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from batchgen.dashboard import binds, health, queries, run_detail
from batchgen.dashboard.cost_report import cost_report

REFRESH_SECONDS = 10


def staff_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Anonymous: redirect to LOGIN_URL. Logged in but not staff: 403 (not a login loop)."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_staff:
            raise PermissionDenied("The dashboard is for staff members.")
        return view(request, *args, **kwargs)

    return wrapper


def _live_context(request: HttpRequest) -> dict[str, Any]:
    """Cards, charts and table from the same filters (bad ones are shown and ignored)."""
    found = queries.history(request.GET)
    return {"overview": queries.overview(found.window),
            "charts": queries.build_charts(found.window),
            "costs": cost_report(found.window),
            "binds": binds.what_binds(),
            "history": found, "refresh_seconds": REFRESH_SECONDS,
            **health.dashboard_context(),
            "time_zone": timezone.get_current_timezone_name()}


@require_GET
@staff_required
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/index.html", _live_context(request))


@require_GET
@staff_required
def live(request: HttpRequest) -> HttpResponse:
    """The cards, charts and history table alone, polled by queries.js."""
    return render(request, "dashboard/_live.html", _live_context(request))


@require_GET
@staff_required
def batch_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run, rows = run_detail.batch_detail(run_id)
    return render(request, "dashboard/detail.html",
                  {"run": run, "rows": rows, "links": run_detail.run_links(run)})


@require_GET
@staff_required
def api_batches(request: HttpRequest) -> JsonResponse:
    """The batch history as JSON: same filters and pagination as the page."""
    found = queries.history(request.GET)
    if found.errors:
        return JsonResponse({"errors": found.errors}, status=400)
    page = found.page
    base = reverse("dashboard:api_batches")

    def link(number: int) -> str:
        return f"{base}?{found.page_query(number)}"

    return JsonResponse({
        "count": page.paginator.count,
        "page": page.number,
        "num_pages": page.paginator.num_pages,
        "next": link(page.next_page_number()) if page.has_next() else None,
        "previous": link(page.previous_page_number()) if page.has_previous() else None,
        "results": [queries.batch_as_dict(run) for run in page.object_list],
    })
