"""Notes for pages the project does not own (django-rq's), from what the dashboard knows:
RQ counts jobs, while work fails item by item. May import batchgen.dashboard."""

from __future__ import annotations

from django import template
from django.urls import reverse
from django.utils.html import format_html

from batchgen.dashboard import console

register = template.Library()
NOTE = ("RQ counts jobs, and a job succeeds even when items in it die: a run records each "
        "item's failure and ends normally.")


@register.simple_tag
def dead_items_note() -> str:
    """The RQ note with how many items are dead now, linking to them in the queue list."""
    dead = console.dead_count()
    url = f"{reverse('admin:batchgen_queueitem_changelist')}?status__exact=dead"
    return format_html('<p class="rq-dead-note" data-rq-note>{} <a href="{}">{} dead item{}</a> '
                       "now.</p>", NOTE, url, dead, "" if dead == 1 else "s")
