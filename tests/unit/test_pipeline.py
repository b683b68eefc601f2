"""The batch pipeline in-process (`tick --sync`): claim, generate, save, send, record."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.utils import timezone

from batchgen.conversations import prompting
from batchgen.delivery import runs, scheduler
from batchgen.models import BatchRun, Generation, Message, QueueItem
from tests.factories import make_bot, make_chat, make_item, set_batch_mode

# Transactional: replies go out on commit (outbox), as in production.
pytestmark = pytest.mark.django_db(transaction=True)


def make_items(count: int, **fields) -> list[QueueItem]:
    return [make_item(make_bot(), make_chat(), **fields) for _ in range(count)]


def test_a_batch_sends_every_item_once_to_its_own_chat(pipeline_env) -> None:
    fake_llm, fake_telegram = pipeline_env
    items = make_items(6)
    set_batch_mode(10)
    summary = scheduler.tick(sync=True)
    run = summary.run
    assert (run.mode, run.size, run.status, run.successes, run.failures) == (
        "batch", 6, "succeeded", 6, 0)
    delivered = fake_telegram.messages()
    assert sorted(m["chat_id"] for m in delivered) == sorted(
        i.chat.telegram_chat_id for i in items)
    for item in items:
        item.refresh_from_db()
        message = Message.objects.get(queue_item=item)
        [seen] = [m for m in delivered if m["chat_id"] == item.chat.telegram_chat_id]
        assert seen["text"] == message.text and seen["token"] == item.bot.telegram_token
        assert seen["params"].get("parse_mode") is None
        assert (item.status, message.status) == ("done", "sent")
        assert message.telegram_message_id == seen["message_id"]
    assert fake_llm.stats()["requests"]["openai"] == {"200": 6}


def test_the_run_records_figures_that_match_what_happened(pipeline_env, settings) -> None:
    settings.LLM_PRICES = {"gpt-4o-mini": (1.0, 0.5, 2.0)}
    settings.LLM_MODEL = "gpt-4o-mini"
    make_items(4)
    set_batch_mode(4)
    run = scheduler.tick(sync=True).run
    generations = list(Generation.objects.filter(batch_run=run))
    assert len(generations) == 4 and all(g.ok for g in generations)
    assert run.prompt_tokens == sum(g.prompt_tokens for g in generations) > 0
    assert run.completion_tokens == sum(g.completion_tokens for g in generations) > 0
    expected = sum((g.prompt_tokens - g.cached_tokens) * 1.0 + g.cached_tokens * 0.5
                   + g.completion_tokens * 2.0 for g in generations) / 1e6
    assert float(run.cost_usd) == pytest.approx(expected, abs=1e-6)
    assert run.workers == 4 and run.provider == "openai" and run.model == "gpt-4o-mini"
    assert run.duration_s > 0 and run.throughput == pytest.approx(4 / run.duration_s)
    assert run.latency_p95_s >= run.latency_mean_s > 0
    assert run.error_summary == {}


def test_an_unknown_model_gets_no_cost_rather_than_zero(pipeline_env, settings) -> None:
    settings.LLM_MODEL = "some-unpriced-model"
    make_items(1)
    run = scheduler.tick(sync=True).run
    assert run.successes == 1 and run.cost_usd is None


def test_batch_mode_off_sends_one_item_at_a_time_in_priority_order(pipeline_env) -> None:
    fake_llm, fake_telegram = pipeline_env
    # A provider's latency, as in real use: at 0 s both replies were due at once and the send
    # pool raced them to Telegram in either order (a flake under CI's load).
    fake_llm.control(latency=0.3)
    bot = make_bot()
    low = make_item(bot, make_chat(), priority=1)
    high = make_item(bot, make_chat(), priority=9)
    run = scheduler.tick(sync=True).run
    assert (run.mode, run.workers, run.size, run.successes) == ("single", 1, 2, 2)
    assert [m["chat_id"] for m in fake_telegram.messages()] == [
        high.chat.telegram_chat_id, low.chat.telegram_chat_id]
    assert fake_llm.stats()["in_flight_peak"] == 1
    assert scheduler.tick(sync=True).run is None


def test_a_run_keeps_batch_size_in_flight_and_refills_until_the_queue_is_dry(
        pipeline_env) -> None:
    fake_llm, fake_telegram = pipeline_env
    fake_llm.control(latency=0.2)
    make_items(12)
    set_batch_mode(4)
    run = scheduler.tick(sync=True).run
    assert (run.mode, run.workers, run.size, run.successes, run.status) == (
        "batch", 4, 12, 12, "succeeded")
    assert fake_llm.stats()["in_flight_peak"] == 4
    assert len(fake_telegram.messages()) == 12
    assert not QueueItem.objects.exclude(status="done").exists()


def test_a_run_stops_refilling_at_its_item_bound(pipeline_env, settings) -> None:
    settings.BATCH_DRAIN_MAX_ITEMS = 5
    make_items(8)
    set_batch_mode(3)
    run = scheduler.tick(sync=True).run
    assert (run.size, run.successes) == (5, 5)
    assert QueueItem.objects.filter(status="pending").count() == 3
    assert scheduler.tick(sync=True).run.size == 3


def test_the_next_tick_sees_a_settings_change(pipeline_env) -> None:
    make_items(2)
    assert scheduler.tick(sync=True).run.workers == 1
    make_items(2)
    set_batch_mode(3)
    assert scheduler.tick(sync=True).run.workers == 3


def test_a_refused_prompt_is_dead_at_once_with_the_reason(pipeline_env) -> None:
    item = make_item(make_bot(persona="[[fault:content_filter]]"), make_chat())
    run = scheduler.tick(sync=True).run
    item.refresh_from_db()
    assert run.status == "failed" and item.status == "dead" and item.attempts == 1
    assert item.last_error.startswith("content_filter")


def test_bad_items_end_dead_with_a_reason_and_the_batch_goes_on(pipeline_env) -> None:
    inactive = make_item(make_bot(is_active=False), make_chat())
    no_bot = make_item()
    no_bot.bot.delete()
    no_chat = make_item()
    no_chat.chat.delete()
    good = make_item()
    set_batch_mode(10)
    run = scheduler.tick(sync=True).run
    assert (run.size, run.successes, run.failures) == (4, 1, 3)
    assert run.error_summary == {"invalid_item": 3}
    reasons = {i.id: (i.status, i.last_error) for i in QueueItem.objects.all()}
    assert reasons[inactive.id][0] == "dead" and "is inactive" in reasons[inactive.id][1]
    assert reasons[no_bot.id] == ("dead", "its bot was deleted")
    assert reasons[no_chat.id] == ("dead", "its chat was deleted")
    assert reasons[good.id][0] == "done"


def test_telegram_400_is_final_with_the_description(pipeline_env) -> None:
    _, fake_telegram = pipeline_env
    item = make_item()
    fake_telegram.control(fault="400", count=1)
    scheduler.tick(sync=True)
    item.refresh_from_db()
    message = Message.objects.get(queue_item=item)
    assert message.status == "failed" and "chat not found" in message.error
    assert item.status == "dead" and "chat not found" in item.last_error
    assert scheduler.tick(sync=True).run is None


def test_an_ambiguous_send_is_never_resent(pipeline_env) -> None:
    _, fake_telegram = pipeline_env
    item = make_item()
    fake_telegram.control(fault="drop", count=1)
    scheduler.tick(sync=True)
    message = Message.objects.get(queue_item=item)
    item.refresh_from_db()
    assert message.status == "send_unknown" and item.status == "dead"
    assert scheduler.tick(sync=True).run is None
    assert len(fake_telegram.messages()) == 1


def test_an_item_found_mid_send_after_a_crash_is_not_sent_again(pipeline_env) -> None:
    _, fake_telegram = pipeline_env
    item = make_item()
    run = BatchRun.objects.create(mode="single")
    Message.objects.create(queue_item=item, bot=item.bot, chat=item.chat, batch_run=run,
                           text="half sent", status="sending")
    scheduler.tick(sync=True)
    item.refresh_from_db()
    assert Message.objects.get(queue_item=item).status == "send_unknown"
    assert item.status == "dead" and "outcome unknown" in item.last_error
    assert fake_telegram.messages() == []


def test_a_saved_but_unsent_message_is_sent_without_generating_again(pipeline_env) -> None:
    fake_llm, fake_telegram = pipeline_env
    item = make_item()
    Message.objects.create(queue_item=item, bot=item.bot, chat=item.chat, text="saved text")
    run = scheduler.tick(sync=True).run
    assert run.successes == 1
    assert [m["text"] for m in fake_telegram.messages()] == ["saved text"]
    assert fake_llm.stats()["requests"].get("openai") is None


def test_multibot_refuses_unknown_bots_naming_them(pipeline_env) -> None:
    chat = make_chat()
    with pytest.raises(ValueError, match=r"no active bot with id \[999\]"):
        scheduler.generate_for_multiple_bots([999], chat.id)
    assert not QueueItem.objects.exists()


def test_tick_command_prints_one_summary_line(pipeline_env, capsys) -> None:
    make_items(1)
    call_command("tick", "--sync")
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and " tick: batch " in out[0]
    call_command("tick", "--sync")
    stamp, line = capsys.readouterr().out.strip().split(" ", 1)
    assert line == ("tick: nothing pending; 0 updates processed, 0 items produced, "
                    "0 expired leases returned")
    assert stamp.startswith(str(timezone.now().year)) and stamp.endswith("+00:00")


def test_tick_without_an_api_key_exits_non_zero_naming_it_and_claims_nothing(
        pipeline_env, settings) -> None:
    from django.core.management.base import CommandError

    from batchgen.llm import config

    settings.OPENAI_API_KEY = ""
    settings.OPENAI_API_KEYS = []
    config.reset()
    item = make_item()
    with pytest.raises(CommandError, match="OPENAI_API_KEY .* is not set"):
        call_command("tick", "--sync")
    item.refresh_from_db()
    assert (item.status, item.attempts) == ("pending", 0)


def _open_the_breaker(settings) -> None:
    from batchgen.state.breakers import get_circuit_breaker, reset_circuit_breakers

    settings.LLM_CIRCUIT_BREAKER_THRESHOLD = 1
    reset_circuit_breakers()
    breaker = get_circuit_breaker("openai_api")
    breaker.before_call()
    breaker.record_failure()


def test_tick_claims_nothing_while_the_breaker_is_open_and_says_until_when(
        pipeline_env, settings) -> None:
    fake_llm, _ = pipeline_env
    _open_the_breaker(settings)
    item = make_item(max_attempts=1)
    summary = scheduler.tick(sync=True)
    assert summary.run is None
    assert "tick: openai circuit open until 20" in summary.line()
    item.refresh_from_db()
    assert (item.status, item.attempts, item.batch_run_id) == ("pending", 0, None)
    assert fake_llm.stats()["requests"].get("openai") is None


def test_an_open_circuit_defers_items_until_it_half_opens_without_spending_attempts(
        pipeline_env, settings) -> None:
    fake_llm, _ = pipeline_env
    settings.LLM_CIRCUIT_BREAKER_TIMEOUT = 120
    _open_the_breaker(settings)
    item = make_item(max_attempts=1)
    run = runs.run_batch(runs.open_run().id)  # a run already on a worker
    item.refresh_from_db()
    assert (item.status, item.attempts) == ("pending", 0)
    assert item.last_error.startswith("circuit_open")
    wait_s = (item.available_at - timezone.now()).total_seconds()
    assert 100 < wait_s <= 120  # when the breaker half-opens, not BATCH_RETRY_BACKOFF_SECONDS
    assert run.error_summary == {"circuit_open": 1}
    assert fake_llm.stats()["requests"].get("openai") is None


def test_a_reply_with_a_lone_surrogate_or_an_error_with_nul_is_stored_and_the_run_goes_on(
        pipeline_env) -> None:
    from batchgen.core.prompts import UserPrompt
    from batchgen.delivery import drain
    from batchgen.llm import GenerationResult
    from batchgen.work import outbox

    _, fake_telegram = pipeline_env
    poisoned, failing, fine = make_items(3)
    run = runs.open_run(BatchRun.Mode.BATCH, 3)
    from batchgen.work import queue

    queue.claim(3, run)
    work = {item.id: drain.Work(item, "prompt", "system", UserPrompt("prompt"))
            for item in queue.claimed_items(run)}
    group = [
        (work[poisoned.id], GenerationResult(text="hello \ud83d there", provider="openai")),
        (work[failing.id], GenerationResult(text=None, error_kind="bad_request",
                                            error_message="bad\x00byte", provider="openai")),
        (work[fine.id], GenerationResult(text="fine", provider="openai")),
    ]
    with outbox.Delivery(run) as delivery:
        drain.save(run, group, delivery)
    assert sorted(m["text"] for m in fake_telegram.messages()) == ["fine", "hello \ufffd there"]
    failing.refresh_from_db()
    assert failing.status == "dead" and failing.last_error == "bad_request: bad\ufffdbyte"
    assert Generation.objects.get(queue_item=failing).error == "bad\ufffdbyte"


def test_an_item_whose_reply_cannot_be_saved_is_settled_and_the_rest_are_sent(
        pipeline_env, monkeypatch) -> None:
    from batchgen.delivery import drain

    _, fake_telegram = pipeline_env
    items = make_items(5)
    poisoned = items[2]
    real = drain._generation

    def generation(run, entry, result):
        if entry.item.id == poisoned.id:
            raise ValueError("cannot store this reply")
        return real(run, entry, result)

    monkeypatch.setattr(drain, "_generation", generation)
    set_batch_mode(5)
    run = scheduler.tick(sync=True).run
    poisoned.refresh_from_db()
    assert (run.size, run.successes, run.failures) == (5, 4, 1)
    assert poisoned.status == "dead" and poisoned.attempts == 1
    assert poisoned.last_error == "could not save the reply: ValueError: cannot store this reply"
    assert len(fake_telegram.messages()) == 4
    assert not QueueItem.objects.filter(status="claimed").exists()


@pytest.mark.parametrize("lost_at", ["the group's commit", "every commit"])
def test_a_save_that_committed_but_lost_its_answer_is_sent_once_not_killed(
        pipeline_env, monkeypatch, lost_at) -> None:
    """The database was killed after it committed a group's replies but before the worker
    heard so (CI found it: "could not save the reply: IntegrityError: duplicate key"). The
    replies are saved; they must go out once, not be saved again or have their items
    killed."""
    from django.db import OperationalError

    from batchgen.delivery import drain
    from batchgen.work import outbox

    _, fake_telegram = pipeline_env
    items = make_items(4)
    real = drain.save
    calls = []

    def save(run, group, delivery, route="sync"):
        calls.append(len(group))
        if lost_at == "every commit" or len(calls) == 1:
            # Committed, and then the COMMIT raised: Django runs no on_commit hook.
            with monkeypatch.context() as patch:
                patch.setattr(outbox.transaction, "on_commit", lambda hook: None)
                real(run, group, delivery, route)
            raise OperationalError("server closed the connection unexpectedly")
        real(run, group, delivery, route)

    monkeypatch.setattr(drain, "save", save)
    set_batch_mode(4)
    run = scheduler.tick(sync=True).run
    assert sorted(m["chat_id"] for m in fake_telegram.messages()) == sorted(
        item.chat.telegram_chat_id for item in items)
    assert Message.objects.count() == 4 and Generation.objects.count() == 4
    assert set(QueueItem.objects.values_list("status", "last_error")) == {("done", "")}
    assert (run.successes, run.failures) == (4, 0)


def test_each_item_goes_out_with_its_bots_own_system_prompt_and_the_chats_history(
        pipeline_env, monkeypatch) -> None:
    from batchgen.llm import LLMBatchClient
    from batchgen.models.conversations import ChatMessage

    seen = []
    real_submit = LLMBatchClient.submit

    def submit(self, prompt, **options):
        seen.append(options.get("system_prompt"))
        return real_submit(self, prompt, **options)

    monkeypatch.setattr(LLMBatchClient, "submit", submit)
    set_batch_mode(5)
    pirate, plain, chat = make_bot(system_prompt="You are a pirate."), make_bot(), make_chat()
    ChatMessage.objects.create(chat=chat, telegram_message_id=1, speaker="Alice",
                               from_human=True, text="anyone seen my parrot?",
                               sent_at=timezone.now())
    make_item(pirate, chat)  # queued without recent lines: the chat's history fills in
    make_item(plain, chat)

    run = scheduler.tick(sync=True).run

    assert run.successes == 2
    assert sorted(seen, key=str) == sorted(["You are a pirate.",
                                            prompting.system_prompt_for(plain)], key=str)
    for generation in Generation.objects.filter(batch_run=run):
        assert "Alice: anyone seen my parrot?" in generation.prompt


def test_a_long_persona_is_shortened_and_a_long_reply_cut_and_both_are_recorded(
        pipeline_env, settings) -> None:
    from batchgen.delivery import drain
    from batchgen.llm import GenerationResult
    from batchgen.work import outbox, queue

    settings.TELEGRAM_MAX_PARTS = 1
    bot = make_bot(persona="Loves long walks on the beach. " * 220)  # over PERSONA_MAX_CHARS
    item = make_item(bot, make_chat(), recent_messages=[f"Bob: line {n} " + "x" * 200
                                                        for n in range(30)])
    run = runs.open_run(BatchRun.Mode.BATCH, 1)
    queue.claim(1, run)
    work = drain.prepare_claimed(queue.claimed_items(run)[0])
    long_reply = "A sentence that goes on. " * 400

    with outbox.Delivery(run) as delivery:
        drain.save(run, [(work, GenerationResult(text=long_reply, provider="openai"))],
                   delivery)

    generation = Generation.objects.get(queue_item=item)
    assert generation.persona_cut > 0 and generation.messages_dropped > 0
    message = Message.objects.get(queue_item=item)
    assert len(message.text) <= 4096 and message.text.endswith("goes on.")
    assert message.cut_chars == len(long_reply.strip()) - len(message.text)


def test_a_bot_kicked_from_a_chat_stops_being_queued_there(pipeline_env) -> None:
    from batchgen.conversations import behaviour
    from batchgen.models.conversations import ChatMessage, Membership

    _, fake_telegram = pipeline_env
    item = make_item()
    Membership.objects.create(bot=item.bot, chat=item.chat)
    fake_telegram.control(fault="403", count=1)

    scheduler.tick(sync=True)

    item.refresh_from_db()
    assert item.status == "dead" and item.last_error.startswith("telegram: ")
    assert not Membership.objects.get(bot=item.bot, chat=item.chat).is_active
    ChatMessage.objects.create(chat=item.chat, telegram_message_id=5, speaker="Alice",
                               from_human=True, text="still there?", sent_at=timezone.now())
    assert behaviour.produce() == 0


def test_a_database_connection_lost_while_a_run_waits_is_replaced_not_blamed_on_an_item(
        pipeline_env, monkeypatch) -> None:
    # A freed slot is refilled before the finished replies are saved, so preparing the next
    # item is often the first database step after a wait; a connection killed meanwhile
    # (failover, pg_terminate_backend) must not kill that item or the run.
    from django.db import OperationalError

    from batchgen.delivery import drain

    make_items(3)
    set_batch_mode(3)
    real_prepare, failures = drain.prepare_claimed, []

    def prepare_once_on_a_dead_connection(item, *known):
        if not failures:
            failures.append(item.id)
            raise OperationalError("terminating connection due to administrator command")
        return real_prepare(item, *known)

    monkeypatch.setattr(drain, "prepare_claimed", prepare_once_on_a_dead_connection)
    run = scheduler.tick(sync=True).run
    assert failures and run.successes == 3
    assert not QueueItem.objects.exclude(status="done").exists()
