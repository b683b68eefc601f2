"""Staff dashboard views: parse the request, call batchgen.dashboard.queries, render."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import render
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from batchgen.dashboard import binds, console, failures, health, queries, run_detail
from batchgen.dashboard.cost_report import cost_report
from batchgen.work import operator

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
    found.page.object_list = console.attach_progress(list(found.page.object_list))
    groups, dead = failures.failures_by_cause()
    return {"overview": queries.overview(found.window),
            "failures": groups, "dead_total": dead, "paused": console.paused(),
            "effective": console.effective_setting(), "pause_kinds": console.PAUSE_KINDS,
            "charts": queries.build_charts(found.window),
            "costs": cost_report(found.window),
            "binds": binds.what_binds(),
            "history": found, "refresh_seconds": REFRESH_SECONDS,
            "back": console.back_to_dashboard(request.GET),
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


def _back(request: HttpRequest) -> HttpResponseRedirect:
    """To the page the form was on (same site only), else the dashboard."""
    target = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure())
    return HttpResponseRedirect(target if safe and target else reverse("dashboard:index"))


def checked_form(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A POST form whose values no database could take is a 400 naming the field."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if problem := console.refused_field(request.POST):
            return HttpResponseBadRequest(problem, content_type="text/plain; charset=utf-8")
        return view(request, *args, **kwargs)

    return wrapper


@require_POST
@staff_required
@checked_form
def requeue(request: HttpRequest) -> HttpResponse:
    """Requeue the dead items the form selects: all, a group by cause, or ids."""
    try:
        result = operator.requeue(failures.select_dead(request.POST),
                                  by=request.user.get_username())
    except failures.SelectionError as exc:
        messages.error(request, f"Nothing requeued: {exc}.")
    else:
        (messages.warning if result.skipped else messages.success)(request, result.summary())
    return _back(request)


@require_POST
@staff_required
@checked_form
def pause(request: HttpRequest) -> HttpResponse:
    """Pause or resume (``action``) a bot, a chat or a provider."""
    try:
        messages.success(request, console.set_paused(request.POST,
                                                     request.POST.get("action") != "resume"))
    except console.ActionError as exc:
        messages.error(request, f"Nothing changed: {exc}.")
    return _back(request)


def favicon(request: HttpRequest) -> HttpResponseRedirect:
    """/favicon.ico, which browsers ask for on every page that names no icon."""
    return HttpResponseRedirect(static("dashboard/favicon.svg"))


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: Django's bare 403, explained (HTTPS, CSRF_TRUSTED_ORIGINS)."""
    return render(request, "403_csrf.html", {"reason": reason}, status=403)


@require_GET
@staff_required
def batch_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run, rows = run_detail.batch_detail(run_id)
    console.attach_progress([run])
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
