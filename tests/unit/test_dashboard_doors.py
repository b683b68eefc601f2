"""The dashboard's query strings have a size limit: past it the filters are ignored whole,
and the page (or the API's 400) names the rule."""

from __future__ import annotations

import pytest
from django.urls import reverse

from batchgen.models import BatchRun

pytestmark = pytest.mark.django_db


def test_an_oversized_query_string_is_refused_by_the_api_naming_the_rule(operator_client) -> None:
    BatchRun.objects.create(mode="batch", size=2)
    answer = operator_client.get(reverse("dashboard:api_batches"),
                                 {"mode": "batch", "junk": "x" * 3000})
    assert answer.status_code == 400
    assert answer.json() == {"errors": ["filters: longer than 2,000 characters (3,013)"]}


def test_an_oversized_query_string_is_shown_and_ignored_on_the_page(operator_client) -> None:
    BatchRun.objects.create(mode="batch", size=2)
    page = operator_client.get(reverse("dashboard:index"), {"status": "y" * 2500})
    assert page.status_code == 200
    assert "Ignored filter — filters: longer than 2,000 characters" in page.content.decode()


def test_a_page_number_past_the_limit_is_a_named_error(operator_client) -> None:
    answer = operator_client.get(reverse("dashboard:api_batches"), {"page": "9" * 40})
    assert answer.status_code == 400 and answer.json()["errors"][0].startswith("page:")
