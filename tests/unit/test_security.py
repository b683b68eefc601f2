"""Deploy hardening, CSRF on every POST, and no secret in any page, log line or Redis value."""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import django_rq
import pytest
import redis
from django.core import serializers
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rq import SimpleWorker
from rq.job import Job

from batchgen import jobs
from batchgen.delivery import scheduler
from batchgen.models import BatchRun, Bot, Chat, Generation, Message, QueueItem, Setting
from tests.factories import make_bot, make_chat, make_item

# Transactional: replies go out when the outbox row commits, as in production.
pytestmark = pytest.mark.django_db(transaction=True)


# --- manage.py check --deploy ----------------------------------------------


# --- CSRF ------------------------------------------------------------------

def all_url_patterns(patterns: list | None = None, prefix: str = "") -> Iterator[tuple]:
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            yield from all_url_patterns(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry.callback


def test_no_view_is_exempt_from_csrf_but_telegrams_webhook() -> None:
    exempt = [route for route, view in all_url_patterns() if getattr(view, "csrf_exempt", False)]
    # Telegram cannot send a CSRF token; the webhook checks its secret header instead
    # (tests/unit/test_intake_updates.py: a wrong or missing secret gets 403, nothing stored).
    assert exempt == ["telegram/webhook/<int:bot_id>/"]


@pytest.fixture
def staff_csrf_client(django_user_model) -> Client:
    """A logged-in superuser whose client, like a browser, must send the CSRF token."""
    user = django_user_model.objects.create_superuser("boss", password=None)  # no hashing
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def post_targets() -> dict[str, tuple[str, dict]]:
    """Every kind of POST the operators' pages make (URL, form body), and the dashboard's URLs."""
    Setting.ensure_defaults()
    bot, chat, setting = make_bot(), make_chat(), Setting.objects.get(key="batch_size")
    return {
        "toggle batch mode": (reverse("admin:batchgen_setting_toggle"), {}),
        "change a setting": (reverse("admin:batchgen_setting_change", args=[setting.pk]),
                             {"key": "batch_size", "value": "7"}),
        "add a bot": (reverse("admin:batchgen_bot_add"), {"name": "x", "telegram_token": "1:x"}),
        "change a bot": (reverse("admin:batchgen_bot_change", args=[bot.pk]), {"name": "y"}),
        "delete a bot": (reverse("admin:batchgen_bot_delete", args=[bot.pk]), {"post": "yes"}),
        "chat action": (reverse("admin:batchgen_chat_changelist"),
                        {"action": "all_bots_reply", "_selected_action": [chat.pk]}),
        "log out": (reverse("admin:logout"), {}),
        "password change": (reverse("admin:password_change"), {}),
        **{f"dashboard {url}": (url, {}) for url in dashboard_urls()},
    }


def dashboard_urls() -> list[str]:
    run = BatchRun.objects.create(mode="batch")
    return [reverse("dashboard:index"), reverse("dashboard:live"),
            reverse("dashboard:batch_detail", args=[run.pk]), reverse("dashboard:api_batches")]


def test_posts_without_a_csrf_token_are_refused(staff_csrf_client) -> None:
    targets = post_targets()
    refused = {name: staff_csrf_client.post(url, body).status_code
               for name, (url, body) in targets.items()}
    assert refused == dict.fromkeys(targets, 403)
    assert Setting.load().batch_mode_enabled is False and Setting.load().batch_size == 1
    assert Bot.objects.count() == 1 and not QueueItem.objects.exists()


def test_the_toggle_works_with_the_token_so_the_refusal_was_csrf(staff_csrf_client) -> None:
    url = reverse("admin:batchgen_setting_changelist")
    page = staff_csrf_client.get(url)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]
    done = staff_csrf_client.post(reverse("admin:batchgen_setting_toggle"),
                                  {"csrfmiddlewaretoken": token})
    assert done.status_code == 302 and Setting.load().batch_mode_enabled is True


def test_the_dashboard_takes_no_post_even_with_a_token(staff_csrf_client) -> None:
    staff_csrf_client.get(reverse("dashboard:index"))
    token = staff_csrf_client.cookies["csrftoken"].value
    urls = dashboard_urls()
    answers = [staff_csrf_client.post(url, HTTP_X_CSRFTOKEN=token).status_code for url in urls]
    assert answers == [405] * len(urls)


# --- secrets never leak ----------------------------------------------------

@dataclass
class Secrets:
    """Known secrets, each with the part that must never be shown (a token's
    bot id before the colon is public; the rest is the credential)."""

    values: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: str) -> str:
        self.values[name] = value
        return value

    def found_in(self, text: str) -> list[str]:
        return [name for name, value in self.values.items()
                if value.split(":", 1)[-1] in text]


@pytest.fixture
def secrets(settings) -> Secrets:
    found = Secrets()
    settings.METRICS_TOKEN = found.add("metrics token", "metrics-LEAKCANARY-7c1e5a")
    return found


def provider_keys(secrets: Secrets) -> dict[str, str]:
    return {"OPENAI_API_KEY": secrets.add("openai key", "sk-proj-LEAKCANARY-openai-4f9a2b7c"),
            "GROQ_API_KEY": secrets.add("groq key", "gsk_LEAKCANARY-groq-8d3e1f6a"),
            "GEMINI_API_KEY": secrets.add("gemini key", "AIzaLEAKCANARY-gemini-2b5c9e0d")}


def make_secret_bot(secrets: Secrets, persona: str = "") -> Bot:
    bot = make_bot(persona=persona)
    bot.telegram_token = secrets.add(f"token of {bot.name}",
                                     f"{7000000 + bot.pk}:AAF-LEAKCANARY-bot{bot.pk}-q9Zx")
    bot.save(update_fields=["telegram_token"])
    return bot


def queue_failing_batch(secrets: Secrets, fake_telegram) -> None:
    """Two good items, two the provider refuses (401 echoing the key, 500), and four
    whose sends fail at Telegram (400, 401, 500, a dropped connection)."""
    for persona in ("", "", "[[fault:401]]", "[[fault:500]]"):
        make_item(make_secret_bot(secrets, persona), make_chat(), max_attempts=1)
    for fault in ("400", "401", "500", "drop"):
        chat = make_chat()
        make_item(make_secret_bot(secrets), chat, max_attempts=1)
        fake_telegram.control(fault=fault, count=5, chat_id=chat.telegram_chat_id)


def run_through_rq(django_capture_on_commit_callbacks) -> BatchRun:
    """Claim and enqueue as a tick does, then run the job in this process with
    RQ storing its result."""
    with django_capture_on_commit_callbacks(execute=True):
        run = scheduler.tick().run
    worker = django_rq.get_worker(jobs.QUEUE_NAME, worker_class=SimpleWorker)
    worker.work(burst=True)
    job = Job.fetch(f"batchrun-{run.id}", connection=worker.connection)
    assert job.is_finished, job.latest_result()
    run.refresh_from_db()
    return run


def run_other_providers(llm_env, keys: dict[str, str]) -> None:
    for provider in ("groq", "gemini"):
        llm_env(provider, **keys)
        make_item(make_bot(persona="[[fault:401]]"), make_chat(), max_attempts=1)
        assert scheduler.tick(sync=True).run.failures == 1


@pytest.fixture
def leaky_batch(pipeline_env, llm_env, secrets, caplog,
                django_capture_on_commit_callbacks) -> BatchRun:
    """A batch full of failures with known secrets configured, logs captured at DEBUG."""
    _, fake_telegram = pipeline_env
    keys = provider_keys(secrets)
    llm_env("openai", **keys)
    Setting.objects.update_or_create(key="batch_mode_enabled", defaults={"value": True})
    Setting.objects.update_or_create(key="batch_size", defaults={"value": 10})
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="batchgen")
    queue_failing_batch(secrets, fake_telegram)
    run = run_through_rq(django_capture_on_commit_callbacks)
    assert (run.size, run.successes) == (8, 2), run.error_summary
    assert Message.objects.filter(status__in=["failed", "send_unknown"]).count() == 4
    run_other_providers(llm_env, keys)
    return run


def admin_pages() -> list[str]:
    pages = []
    for model in (Bot, Chat, Message, Generation, QueueItem, BatchRun, Setting):
        name = f"admin:batchgen_{model._meta.model_name}"
        pages.append(reverse(f"{name}_changelist"))
        pages += [reverse(f"{name}_change", args=[pk])
                  for pk in model.objects.values_list("pk", flat=True)]
    return pages


def dashboard_pages() -> list[str]:
    return [reverse("dashboard:index"), reverse("dashboard:live"),
            reverse("dashboard:api_batches"), "/metrics",
            *(reverse("dashboard:batch_detail", args=[pk])
              for pk in BatchRun.objects.values_list("pk", flat=True))]


def test_no_secret_in_any_page(leaky_batch, secrets, admin_client, settings) -> None:
    pages = admin_pages() + dashboard_pages()
    leaks = {}
    for url in pages:
        response = admin_client.get(url, HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}")
        assert response.status_code == 200, url
        leaks[url] = secrets.found_in(response.content.decode())
    assert {url: names for url, names in leaks.items() if names} == {}
    # The pages did show the failures, so the search looked at the right text.
    detail = admin_client.get(reverse("dashboard:batch_detail", args=[leaky_batch.pk]))
    assert "chat not found" in detail.content.decode()


def test_no_secret_in_any_log_line(leaky_batch, secrets, caplog) -> None:
    records = caplog.get_records("setup")  # the batch ran in the fixture
    assert len(records) > 10  # httpx, the SDKs and batchgen all logged
    lines = [caplog.handler.format(record) for record in records]
    assert [line for line in lines if secrets.found_in(line)] == []


def redis_dump(client: redis.Redis) -> Iterator[tuple[str, bytes]]:
    """Every key with every value (RQ's job data is zlib-compressed: unpacked too)."""
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            values = [client.get(key)]
        elif kind == "hash":
            values = [v for pair in client.hgetall(key).items() for v in pair]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [v for _, entry in client.xrange(key) for pair in entry.items() for v in pair]
        else:
            values = []
        for value in [key, *values]:
            yield key.decode(), value
            try:
                yield key.decode(), zlib.decompress(value)
            except zlib.error:
                pass


def test_no_secret_in_redis_job_data_or_any_key(leaky_batch, secrets, redis_client) -> None:
    dump = list(redis_dump(redis_client))
    assert any(key.startswith("rq:job:batchrun-") for key, _ in dump)
    leaks = {key for key, value in dump
             if secrets.found_in(value.decode("utf-8", errors="replace"))}
    assert leaks == set()
    job = Job.fetch(f"batchrun-{leaky_batch.id}", connection=redis_client)
    assert job.args == (leaky_batch.id,) and job.kwargs == {}


def test_no_secret_stored_outside_the_token_column(leaky_batch, secrets) -> None:
    # Errors and replies are saved in these rows and shown by the admin and dashboard.
    bots = serializers.serialize("json", Bot.objects.all(), fields=["name", "persona"])
    rows = serializers.serialize("json", [
        *Chat.objects.all(), *QueueItem.objects.all(), *BatchRun.objects.all(),
        *Generation.objects.all(), *Message.objects.all()])
    assert secrets.found_in(bots + rows) == []
    refused = Generation.objects.filter(ok=False, prompt__contains="[[fault:401]]")
    assert refused.count() == 3 and all(g.error for g in refused)
