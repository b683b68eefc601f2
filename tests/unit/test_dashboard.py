"""The dashboard's queries and aggregates (batchgen.dashboard.queries)."""

from __future__ import annotations

import sys
import types
from datetime import timedelta
from decimal import Decimal
from itertools import count

import pytest
from django.http import QueryDict
from django.utils import timezone

from batchgen.dashboard import queries, run_detail
from batchgen.models import BatchRun, Bot, Chat, Generation, Message, QueueItem, Setting

pytestmark = pytest.mark.django_db
_serial = count(1)
BOT_TOKEN = "123456789:AAH-secret-bot-token-never-shown"


def make_bot(name: str = "", token: str = BOT_TOKEN) -> Bot:
    return Bot.objects.create(name=name or f"bot{next(_serial)}", telegram_token=token)


def make_chat(title: str = "") -> Chat:
    n = next(_serial)
    return Chat.objects.create(telegram_chat_id=-1000 - n, title=title or f"chat {n}")


def make_item(bot: Bot | None = None, chat: Chat | None = None, **fields: object) -> QueueItem:
    return QueueItem.objects.create(bot=bot or make_bot(), chat=chat or make_chat(), **fields)


def make_batch(created_at: timezone.datetime | None = None, **fields: object) -> BatchRun:
    defaults = {"mode": "batch", "status": "succeeded", "size": 2, "provider": "openai",
                "model": "gpt-4o-mini", "successes": 2, "failures": 0, "throughput": 4.0,
                "duration_s": 0.5, "latency_mean_s": 0.3, "latency_p95_s": 0.45,
                "prompt_tokens": 100, "completion_tokens": 40, "cost_usd": Decimal("0.0012")}
    run = BatchRun.objects.create(**{**defaults, **fields})
    if created_at is not None:  # auto_now_add ignores the value given to create()
        BatchRun.objects.filter(pk=run.pk).update(created_at=created_at)
        run.refresh_from_db()
    return run


def make_generation(run: BatchRun, ok: bool = True, item: QueueItem | None = None,
                    **fields: object) -> Generation:
    item = item or make_item(batch_run=run, status="done" if ok else "pending")
    defaults = {"prompt": "Say something about markets", "text": "Markets are calm." if ok
                else "", "latency_s": 0.3, "prompt_tokens": 50, "completion_tokens": 20,
                "provider": run.provider, "model": run.model, "attempts": 1,
                "error_kind": "" if ok else "timeout", "error": "" if ok else "timed out"}
    return Generation.objects.create(batch_run=run, queue_item=item, bot=item.bot,
                                     chat=item.chat, ok=ok, **{**defaults, **fields})


def make_message(generation: Generation, status: str = "sent", **fields: object) -> Message:
    return Message.objects.create(
        queue_item=generation.queue_item, bot=generation.bot, chat=generation.chat,
        batch_run=generation.batch_run, text=generation.text, status=status,
        sent_at=timezone.now() if status == "sent" else None, **fields)


def test_overview_counts_todays_sent_messages_and_success_rate() -> None:
    run = make_batch()
    for ok in (True, True, True, False):
        generation = make_generation(run, ok=ok)
        if ok:
            make_message(generation, telegram_message_id=77)
    old = make_message(make_generation(run))
    Message.objects.filter(pk=old.pk).update(sent_at=timezone.now() - timedelta(days=2))

    result = queries.overview()

    assert result.messages_sent == 3
    assert result.generations == 5
    assert result.success_percent == pytest.approx(80.0)


def test_cards_follow_the_filters_and_say_which_window_they_cover() -> None:
    groq = make_batch(provider="groq", successes=1, cost_usd=Decimal("0.002"))
    make_message(make_generation(groq))
    openai = make_batch(provider="openai", cost_usd=Decimal("0.5"))
    make_message(make_generation(openai))
    make_message(make_generation(openai))
    make_batch(provider="groq", throughput=9.0, cost_usd=Decimal("7"),
               created_at=timezone.now() - timedelta(days=3))

    today = queries.overview(queries.Window(provider="groq"))
    older = queries.history(QueryDict(
        f"provider=groq&date_from={timezone.now() - timedelta(days=5):%Y-%m-%d}"))
    span = queries.overview(older.window)

    assert (today.messages_sent, today.generations) == (1, 1)
    assert today.window.startswith("today, ") and today.window.endswith("(UTC) · groq")
    assert (span.messages_sent, span.generations) == (1, 1)
    assert span.window.endswith(" to now (UTC) · groq")


def test_charts_follow_the_filters() -> None:
    groq = make_batch(provider="groq")
    for _ in range(3):
        make_message(make_generation(groq))
    openai = make_batch(provider="openai")
    for _ in range(7):
        make_message(make_generation(openai))

    drawn = queries.build_charts(queries.Window(provider="groq"))

    assert "sent: 3 sent" in drawn["sent"] and "7 sent" not in drawn["sent"]
    assert drawn["window"].endswith("· groq")


def test_a_provider_without_a_key_reads_not_configured(settings, redis_url) -> None:
    settings.OPENAI_API_KEY, settings.GEMINI_API_KEY, settings.GROQ_API_KEY = "sk-x", "", ""
    settings.OPENAI_API_KEYS = settings.GEMINI_API_KEYS = settings.GROQ_API_KEYS = ""

    states = {b["provider"]: b["state"] for b in queries.breaker_states()}

    assert states == {"openai": "closed", "gemini": "not_configured",
                      "groq": "not_configured"}


def test_queue_now_counts_what_waits_not_what_is_done() -> None:
    make_item(status="pending")
    make_item(status="pending")
    make_item(status="dead")
    make_item(status="done")
    make_item(status="batched")  # waiting on a provider batch: its own line on the card
    paused_bot = make_bot("paused")
    Bot.objects.filter(id=paused_bot.id).update(paused_at=timezone.now())
    make_item(bot=paused_bot, status="pending")

    result = queries.overview()

    assert result.queue_depth == {"pending": 2, "paused": 1, "claimed": 0, "batched": 1}
    assert result.queue_total == 4 and result.dead == 1


def test_overview_shows_batch_mode_from_settings() -> None:
    Setting.objects.update_or_create(key="batch_mode_enabled", defaults={"value": True})
    Setting.objects.update_or_create(key="batch_size", defaults={"value": 20})

    result = queries.overview()

    assert (result.batch_mode_enabled, result.batch_size) == (True, 20)
    assert result.settings_url == "/admin/batchgen/setting/"


def test_breaker_state_is_unknown_when_resilience_fails(monkeypatch, settings) -> None:
    settings.OPENAI_API_KEY = settings.GEMINI_API_KEY = settings.GROQ_API_KEY = "key-123456"
    fake = types.ModuleType("batchgen.state.breakers")

    def stats(name: str) -> dict:
        if name == "groq_api":
            raise RuntimeError("redis down")
        return {"state": "open" if name == "openai_api" else "closed", "failures": 5}

    fake.get_circuit_breaker_stats = stats
    monkeypatch.setitem(sys.modules, "batchgen.state.breakers", fake)

    states = {b["name"]: b["state"] for b in queries.breaker_states()}

    assert states == {"openai_api": "open", "gemini_api": "closed", "groq_api": "unknown"}


def test_history_filters_by_mode_status_provider_and_dates() -> None:
    today = timezone.now()
    wanted = make_batch(mode="multi_bot", status="partial", provider="groq")
    make_batch(mode="batch", status="partial", provider="groq")
    make_batch(mode="multi_bot", status="partial", provider="groq",
               created_at=today - timedelta(days=10))

    found = queries.history(QueryDict(
        f"mode=multi_bot&status=partial&provider=groq&date_from={today:%Y-%m-%d}"
        f"&date_to={today:%Y-%m-%d}"))

    assert found.errors == []
    assert [run.pk for run in found.page.object_list] == [wanted.pk]


def test_history_reports_bad_filters_and_ignores_them() -> None:
    make_batch()

    found = queries.history(QueryDict("mode=turbo&date_from=yesterday&page=-3"))

    assert len(found.errors) == 3
    assert any("mode" in error and "turbo" in error for error in found.errors)
    assert found.page.paginator.count == 1


def test_history_refuses_a_reversed_date_range() -> None:
    found = queries.history(QueryDict("date_from=2025-05-02&date_to=2025-05-01"))

    assert found.errors == ["dates: 'from' must be on or before 'to'."]


def test_history_pages_hold_25_newest_first() -> None:
    runs = [make_batch() for _ in range(30)]

    first = queries.history(QueryDict("")).page
    second = queries.history(QueryDict("page=2")).page

    assert len(first.object_list) == 25
    assert first.object_list[0].pk == runs[-1].pk
    assert [run.pk for run in second.object_list] == [run.pk for run in runs[:5]][::-1]


def test_detail_pairs_each_generation_with_this_runs_message_only() -> None:
    first, second = make_batch(status="partial"), make_batch()
    failed = make_generation(first, ok=False)
    retried = make_generation(second, item=failed.queue_item)
    make_message(retried, telegram_message_id=991)
    sent = make_generation(first)
    make_message(sent, telegram_message_id=992)

    run, rows = run_detail.batch_detail(first.pk)

    assert run == first
    assert [(row.generation.pk, row.message and row.message.telegram_message_id)
            for row in rows] == [(failed.pk, None), (sent.pk, 992)]


def test_detail_redacts_any_stored_secret(settings) -> None:
    settings.OPENAI_API_KEY = "sk-test-openai-key-123456"
    run = make_batch()
    make_generation(run, ok=False,
                    error=f"auth failed for sk-test-openai-key-123456 and bot {BOT_TOKEN}")

    _, rows = run_detail.batch_detail(run.pk)

    assert rows[0].error == "auth failed for [redacted] and bot [redacted]"


def test_charts_are_empty_without_batches_and_drawn_with_them(settings) -> None:
    settings.LLM_PRICES = {"gpt-4o-mini": (1.0, 0.1, 2.0)}  # USD / 1M tokens
    names = ("sent", "latency", "outcomes", "cost")
    empty = queries.build_charts()
    assert all("No data yet" in empty[name] for name in names)

    make_message(make_generation(make_batch(cost_usd=Decimal("0.25"))))
    make_batch(cost_usd=None, failures=1)

    drawn = queries.build_charts()
    assert all("<svg" in drawn[name] for name in names)
    # Priced from the generation (50 prompt and 20 completion tokens), not the run's cost_usd.
    assert "cost: 0.00009 USD" in drawn["cost"]


def test_while_a_run_is_running_the_cost_chart_panel_and_tokens_card_agree(
        settings, operator_client) -> None:
    from batchgen.dashboard.cost_report import cost_report
    from batchgen.templatetags.dashboard_format import usd

    settings.LLM_PRICES = {"m": (1.0, 0.1, 2.0)}  # USD / 1M tokens: input, cached, output
    running = make_batch(status="running", model="m", cost_usd=None, prompt_tokens=0,
                         completion_tokens=0)
    for _ in range(2):
        make_generation(running, prompt_tokens=1000, cached_tokens=0, completion_tokens=100)

    page = operator_client.get("/dashboard/").content.decode()
    total = cost_report().total

    assert total.cost == Decimal("0.0024") and total.tokens == 2200
    assert page.count(f"${usd(total.cost)}") == 1  # the Cost panel's, and only there
    assert 'data-card="tokens">2200<' in page
    assert "cost: 0.0024 USD" in queries.build_charts()["cost"]
    assert not hasattr(queries.Overview, "cost_per_1k_messages")


# --- The cost panel (batchgen.dashboard.cost_report) ----------------------------------------

def make_costed_generations(settings) -> None:
    settings.LLM_PRICES = {"m": (1.0, 0.1, 2.0)}  # USD / 1M tokens: input, cached, output
    sync = make_batch(provider="openai", model="m")
    for _ in range(2):  # 1,000 prompt tokens, 800 of them cached, 100 completion tokens
        make_generation(sync, prompt_tokens=1000, cached_tokens=800, completion_tokens=100)
    make_generation(make_batch(provider="openai", model="m"), route="batch",
                    prompt_tokens=1000, cached_tokens=0, completion_tokens=100)
    make_generation(make_batch(provider="gemini", model="gemini-9-unknown"),
                    prompt_tokens=500, completion_tokens=50)


def test_cost_per_message_is_shown_by_route_and_provider(settings) -> None:
    from batchgen.dashboard.cost_report import cost_report

    make_costed_generations(settings)
    report = cost_report()

    rows = {(r.route, r.provider): r for r in report.rows}
    assert set(rows) == {("sync", "openai"), ("batch", "openai"), ("sync", "gemini")}
    sync, batch, unknown = rows["sync", "openai"], rows["batch", "openai"], rows["sync", "gemini"]
    assert sync.cost_per_message == Decimal("0.00048")  # cached tokens at the cached rate
    assert batch.cost_per_message == Decimal("0.0006")  # the batch route at half price
    assert sync.cache_hit_percent == 80.0 and batch.cache_hit_percent == 0.0
    assert (unknown.priced, unknown.cost_per_message, unknown.saving) == (False, None, None)


def test_the_saving_against_synchronous_prices_comes_from_recorded_usage(settings) -> None:
    from batchgen.dashboard.cost_report import cost_report

    make_costed_generations(settings)
    total = cost_report().total

    # Full price per generation: 1,000 x 1.0 + 100 x 2.0 = 1,200 per million tokens.
    assert total.full_cost == Decimal("0.0036") and total.cost == Decimal("0.00156")
    assert total.saving == Decimal("0.00204") and total.saving_percent == pytest.approx(56.67,
                                                                                      abs=0.01)
    assert total.cache_hit_percent == pytest.approx(100 * 1600 / 3500)
    assert total.unpriced == 1


def test_the_cost_panel_says_no_cost_for_a_model_without_a_price(settings, admin_client) -> None:
    settings.LLM_PRICES = {}
    make_generation(make_batch(model="gpt-unknown"), prompt_tokens=2000, cached_tokens=1024)

    page = admin_client.get("/dashboard/live/").content.decode()

    panel = page[page.index('data-panel="costs"'):]
    assert "no cost" in panel and "$0.00" not in panel
    assert "cache hit rate 51.2%" in panel


def test_no_per_run_throughput_is_shown_once_runs_refill(operator_client) -> None:
    from batchgen.dashboard import report

    runs = [make_batch(), make_batch(mode="single", size=1, successes=1, duration_s=2.0)]

    pages = [operator_client.get(url).content.decode()
             for url in ("/dashboard/", f"/dashboard/batches/{runs[0].pk}/",
                         "/admin/batchgen/batchrun/")]
    text = report.mode_comparison(runs) + report.batch_table(runs)

    assert not any("msg/s" in page for page in pages)
    assert "msg/s" not in text and "median batch" not in text
    assert "batch: 1 batches, 2 messages sent in 0.50 s of batch time" in text
