"""Real processes: `manage.py tick` enqueues, a real `rqworker` runs the job, the fake
Telegram receives. Database state is committed (transactional tests) so the children see it."""

from __future__ import annotations

from collections import Counter

import pytest

from batchgen.models import BatchRun, Generation, Message, QueueItem
from tests.factories import make_bot, make_chat, make_item, set_batch_mode
from tests.processes import kill_hard, manage, process_env, start, stop, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_tick_then_a_real_worker_sends_every_item_once(pipeline_env, settings) -> None:
    fake_llm, fake_telegram = pipeline_env
    items = [make_item(make_bot(), make_chat(), priority=i % 3) for i in range(8)]
    set_batch_mode(8)
    env = process_env(settings)

    tick = manage(env, "tick")
    assert tick.returncode == 0, tick.stderr
    [line] = tick.stdout.strip().splitlines()
    assert "tick: 1 run(s) queued for idle workers (" in line and "batch, 8 in flight" in line
    worker = manage(env, "rqworker", "default", "--burst")
    assert worker.returncode == 0, worker.stderr

    run = BatchRun.objects.get()
    assert (run.status, run.size, run.successes, run.failures) == ("succeeded", 8, 8, 0)
    assert run.rq_job_id == f"batchrun-{run.id}" and run.workers == 8
    delivered = fake_telegram.messages()
    assert Counter(m["chat_id"] for m in delivered) == Counter(
        i.chat.telegram_chat_id for i in items)
    for item in items:
        [seen] = [m for m in delivered if m["chat_id"] == item.chat.telegram_chat_id]
        message = Message.objects.get(queue_item=item)
        assert seen["text"] == message.text and seen["token"] == item.bot.telegram_token
        assert message.text.startswith("Reply to:")  # the fake provider's text
    generations = Generation.objects.filter(batch_run=run)
    assert run.prompt_tokens == sum(g.prompt_tokens for g in generations) > 0
    assert fake_llm.stats()["requests"]["openai"] == {"200": 8}


def test_metrics_recorded_in_the_work_horse_show_at_the_web_endpoint(pipeline_env, settings,
                                                                     client) -> None:
    for _ in range(3):
        make_item(make_bot(), make_chat())
    set_batch_mode(3)
    env = process_env(settings)
    assert manage(env, "tick").returncode == 0
    assert manage(env, "rqworker", "default", "--burst").returncode == 0

    settings.METRICS_TOKEN = "scrape-token"
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token")
    lines = response.content.decode().splitlines()
    batch = '{mode="batch",provider="openai"}'
    assert f"batch_generation_success_total{batch} 3.0" in lines
    assert not any(line.startswith(f"batch_generation_failure_total{batch}") for line in lines)
    assert f"batch_generation_duration_seconds_count{batch} 1.0" in lines
    assert 'telegram_sends_total{outcome="sent"} 3.0' in lines
    assert 'llm_request_duration_seconds_count{outcome="ok",provider="openai"} 3.0' in lines
    assert 'batchgen_queue_items{status="done"} 3.0' in lines
    print("\n".join(line for line in lines if line.startswith(
        ("batch_generation_", "telegram_sends_total", "llm_tokens_total", "llm_cost_usd_total",
         "llm_request_duration_seconds_count", "batchgen_queue_items"))))


def test_a_worker_killed_mid_batch_never_causes_a_second_send(pipeline_env, settings) -> None:
    _, fake_telegram = pipeline_env
    items = [make_item(make_bot(), make_chat()) for _ in range(6)]
    for slow in items[:2]:  # these sends are in flight when the worker dies
        fake_telegram.control(fault="latency", latency=5.0, chat_id=slow.chat.telegram_chat_id)
    set_batch_mode(6)
    env = process_env(settings)
    assert manage(env, "tick").returncode == 0
    worker = start(env, "rqworker", "default")
    wait_for(lambda: len(fake_telegram.messages()) >= 4, 60, "the fast sends delivered")
    kill_hard(worker)  # the worker and its work-horse, mid-batch

    assert QueueItem.objects.filter(status="claimed").exists()
    # Time passes: the lease runs out, then the next tick recovers and runs again.
    QueueItem.objects.filter(status="claimed").update(lease_expires_at="2000-01-01T00:00Z")
    assert manage(env, "tick", "--sync").returncode == 0
    assert manage(env, "tick", "--sync").returncode == 0

    outcomes = Counter()
    for item in QueueItem.objects.all():
        message = Message.objects.filter(queue_item=item).first()
        outcomes[(item.status, message.status if message else None)] += 1
    assert set(outcomes) <= {("done", "sent"), ("dead", "send_unknown")}, outcomes
    assert outcomes[("dead", "send_unknown")] >= 2  # the two cut off mid-send
    assert sum(outcomes.values()) == len(items)
    chats = Counter(m["chat_id"] for m in fake_telegram.messages())
    assert max(chats.values()) == 1, chats
    assert len(chats) >= outcomes[("done", "sent")]


@pytest.mark.postgres
def test_two_ticks_and_three_workers_claim_each_of_300_items_once(pipeline_env,
                                                                   settings) -> None:
    fake_llm, fake_telegram = pipeline_env
    fake_llm.control(latency=0.02)
    bots = [make_bot() for _ in range(30)]
    chats = [make_chat() for _ in range(300)]
    QueueItem.objects.bulk_create(QueueItem(bot=bots[i % 30], chat=chats[i], priority=i % 5)
                                  for i in range(300))
    set_batch_mode(10)
    env = process_env(settings, BATCH_MAX_WORKERS="10")
    procs = [start(env, "tick", "--loop", "--interval", "0.2") for _ in range(2)]
    procs += [start(env, "rqworker", "default") for _ in range(3)]
    try:
        wait_for(lambda: not QueueItem.objects.exclude(status="done").exists(), 240,
                 "all 300 items done")
    finally:
        outputs = [stop(proc) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs[:2]), outputs[:2]
    assert QueueItem.objects.filter(status="done", attempts=1).count() == 300
    per_item = Counter(Generation.objects.values_list("queue_item_id", flat=True))
    assert len(per_item) == 300 and set(per_item.values()) == {1}
    assert Counter(m["chat_id"] for m in fake_telegram.messages()).most_common(1)[0][1] == 1
    assert len(fake_telegram.messages()) == 300
    assert BatchRun.objects.filter(status="succeeded").count() == BatchRun.objects.count()


def _push(count: int, bots: int = 20, **fields) -> list[QueueItem]:
    bot_rows = [make_bot() for _ in range(bots)]
    chats = [make_chat() for _ in range(count)]
    return QueueItem.objects.bulk_create(
        QueueItem(bot=bot_rows[i % bots], chat=chats[i], **fields) for i in range(count))


def _settled() -> bool:
    return not QueueItem.objects.filter(status__in=["pending", "claimed"]).exists()


def _sent_once(fake_telegram) -> Counter:
    chats = Counter(m["chat_id"] for m in fake_telegram.messages())
    assert not chats or max(chats.values()) == 1, chats.most_common(3)
    return chats


def _drain_env(pipeline_env, settings, items: int, latency: float) -> dict[str, str]:
    """``items`` queued in chats of their own, batch mode with 5 in flight, and the
    environment of processes whose leases (10 s) are shorter than a drain: only the
    heartbeat keeps recovery off a live run's items."""
    pipeline_env[0].control(latency=latency)
    _push(items)
    set_batch_mode(5)
    return process_env(settings, BATCH_LEASE_SECONDS="10", BATCH_MAX_WORKERS="5")


def _tick_loop(env: dict[str, str]):
    return start(env, "tick", "--loop", "--interval", "1")


@pytest.mark.postgres
def test_500_items_drain_through_3_workers_each_sent_once_and_every_run_accounts(
        pipeline_env, settings) -> None:
    fake_telegram = pipeline_env[1]
    env = _drain_env(pipeline_env, settings, 500, latency=0.3)
    procs = [_tick_loop(env)]
    procs += [start(env, "rqworker", "default") for _ in range(3)]
    try:
        wait_for(lambda: not QueueItem.objects.exclude(status="done").exists(), 300,
                 "all 500 items done")
    finally:
        outputs = [stop(proc) for proc in procs]
    assert procs[0].returncode == 0, outputs[0]
    assert len(_sent_once(fake_telegram)) == 500
    assert QueueItem.objects.filter(status="done", attempts=1, crashes=0).count() == 500
    runs = list(BatchRun.objects.all())
    assert sum(run.size for run in runs) == sum(run.successes for run in runs) == 500
    assert {run.status for run in runs} == {"succeeded"} and len(runs) >= 3
    assert max(run.duration_s for run in runs) > 10  # longer than one lease, kept by beats
    per_item = Counter(Generation.objects.values_list("queue_item_id", flat=True))
    assert len(per_item) == 500 and set(per_item.values()) == {1}


@pytest.mark.postgres
def test_a_worker_killed_mid_drain_loses_nothing_and_its_items_return_within_a_lease(
        pipeline_env, settings) -> None:
    import time

    fake_telegram = pipeline_env[1]
    env = _drain_env(pipeline_env, settings, 200, latency=0.3)
    victim = start(env, "rqworker", "default")
    procs = [_tick_loop(env), victim]
    try:
        wait_for(lambda: len(fake_telegram.messages()) >= 30, 120, "the drain under way")
        kill_hard(victim)  # the worker and its work-horse, mid-drain
        killed_at = time.monotonic()
        held = set(QueueItem.objects.filter(status="claimed").values_list("id", flat=True))
        assert held
        wait_for(lambda: not QueueItem.objects.filter(id__in=held, status="claimed").exists(),
                 30, "the killed run's items back")
        returned_after = time.monotonic() - killed_at
        procs.append(start(env, "rqworker", "default"))
        wait_for(_settled, 240, "every item settled")
    finally:
        outputs = [stop(proc) for proc in procs if proc is not victim]
    assert procs[0].returncode == 0, outputs[0]
    assert returned_after <= 10 + 1 + 3, returned_after  # one lease, one tick, slack
    chats = _sent_once(fake_telegram)
    outcomes = Counter()
    for item in QueueItem.objects.all():
        message = Message.objects.filter(queue_item=item).first()
        outcomes[(item.status, message.status if message else None)] += 1
    assert set(outcomes) <= {("done", "sent"), ("dead", "send_unknown")}, outcomes
    assert outcomes[("dead", "send_unknown")] <= 5  # at most the sends cut off mid-flight
    assert sum(outcomes.values()) == 200 and len(chats) >= outcomes[("done", "sent")]


def _poisoning_provider():
    """An OpenAI-compatible server that answers like the fake but, for marked prompts,
    returns what real models and gateways were seen to return: a reply with a lone surrogate
    (valid JSON) or an error message carrying NUL."""
    import json

    from aiohttp import web

    from tests.fakes import run_in_thread

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        if "[[nul-error]]" in prompt:
            error = {"error": {"message": "bad \u0000 request", "type": "invalid_request_error"}}
            return web.Response(status=400, text=json.dumps(error),
                                content_type="application/json")
        text = "hello \ud83d there" if "[[surrogate]]" in prompt else f"Reply to: {prompt[:40]}"
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": text}}],
                 "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}
        return web.Response(text=json.dumps(reply), content_type="application/json")

    def app() -> web.Application:
        application = web.Application()
        application.router.add_post("/v1/chat/completions", chat)
        return application

    return run_in_thread(app)


@pytest.mark.postgres
def test_a_poisoned_reply_in_a_batch_of_10_settles_alone_and_the_rest_are_sent_once(
        pipeline_env, settings) -> None:
    _, fake_telegram = pipeline_env
    clean = _push(9, bots=3)
    surrogate = make_item(make_bot(persona="[[surrogate]]"), make_chat())
    nul = make_item(make_bot(persona="[[nul-error]]"), make_chat())
    set_batch_mode(10)
    with _poisoning_provider() as provider:
        env = process_env(settings, OPENAI_BASE_URL=f"{provider.base_url}/v1")
        assert manage(env, "tick").returncode == 0
        worker = manage(env, "rqworker", "default", "--burst")
    assert worker.returncode == 0, worker.stderr
    assert not QueueItem.objects.filter(status__in=["pending", "claimed"]).exists()
    chats = _sent_once(fake_telegram)
    assert all(chats[item.chat.telegram_chat_id] == 1 for item in clean)
    [poisoned] = [m for m in fake_telegram.messages()
                  if m["chat_id"] == surrogate.chat.telegram_chat_id]
    assert poisoned["text"] == "hello \ufffd there"
    nul.refresh_from_db()
    assert nul.status == "dead" and "bad \ufffd request" in nul.last_error
    run = BatchRun.objects.get()
    assert (run.size, run.successes, run.failures, run.status) == (11, 10, 1, "partial")


@pytest.mark.postgres
def test_a_killed_database_connection_mid_drain_loses_nothing_and_sends_once(
        pipeline_env, settings) -> None:
    from django.db import connection

    fake_telegram = pipeline_env[1]
    env = _drain_env(pipeline_env, settings, 120, latency=0.2)
    procs = [_tick_loop(env), start(env, "rqworker", "default")]
    try:
        for sent in (20, 50, 80):
            wait_for(lambda n=sent: len(fake_telegram.messages()) >= n, 120, f"{sent} sent")
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        wait_for(_settled, 240, "every item settled")
    finally:
        outputs = [stop(proc) for proc in procs]
    assert procs[0].returncode == 0, outputs[0]
    _sent_once(fake_telegram)
    statuses = Counter(QueueItem.objects.values_list("status", flat=True))
    reasons = Counter(QueueItem.objects.filter(status="dead").values_list("last_error",
                                                                           flat=True))
    assert statuses["done"] >= 115 and sum(statuses.values()) == 120, (statuses, reasons)
    dead = QueueItem.objects.filter(status="dead")
    assert all("outcome unknown" in item.last_error for item in dead), reasons


def _redis_server(port: int):
    import shutil
    import subprocess

    from batchgen.fakes.ports import wait_for_port

    proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind",
                             "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for_port(port), "redis-server did not start"
    return proc


def test_a_redis_outage_under_a_tick_loop_and_a_worker_then_every_item_is_sent_once(
        pipeline_env, settings) -> None:
    import time

    from batchgen.fakes.ports import free_port

    fake_llm, fake_telegram = pipeline_env
    fake_llm.control(latency=0.3)
    items = _push(40, bots=5)
    set_batch_mode(5)
    port = free_port()
    redis_proc = _redis_server(port)
    env = process_env(settings, REDIS_URL=f"redis://127.0.0.1:{port}/0",
                      BATCH_LEASE_SECONDS="10", BATCH_MAX_WORKERS="5")
    loop = start(env, "tick", "--loop", "--interval", "0.5")
    workers = [start(env, "rqworker", "default")]
    try:
        wait_for(lambda: len(fake_telegram.messages()) >= 5, 60, "the drain under way")
        redis_proc.kill()
        redis_proc.wait()
        time.sleep(5)
        redis_proc = _redis_server(port)
        deadline = time.monotonic() + 180
        while not _settled() and time.monotonic() < deadline:
            if workers[-1].poll() is not None:  # as systemd's Restart=always would
                workers.append(start(env, "rqworker", "default"))
            time.sleep(0.5)
        assert loop.poll() is None, "the tick loop exited during the outage"
    finally:
        out = stop(loop)
        for worker in workers:
            stop(worker)
        redis_proc.kill()
        redis_proc.wait()
    assert loop.returncode == 0 and "tick failed (" in out, out
    chats = _sent_once(fake_telegram)
    statuses = Counter(QueueItem.objects.values_list("status", flat=True))
    assert statuses["done"] == len(chats) and sum(statuses.values()) == len(items)
    assert all("outcome unknown" in item.last_error
               for item in QueueItem.objects.filter(status="dead")), statuses
    print(f"after a 5 s Redis outage: {statuses}, {len(workers)} worker start(s)")


@pytest.mark.postgres
def test_a_work_horse_killed_while_replies_wait_for_a_groups_slots_loses_none(
        pipeline_env, settings) -> None:
    # Three bots in one supergroup, ten items each: Telegram lets each bot post once every
    # 3 s there, so the items wait for their slots and replies written ahead of a slot wait
    # in the outbox. The work-horse is killed while one does; its leases run out as they
    # would in production (10 s), and the next worker sends everything once.
    import time

    fake_llm, fake_telegram = pipeline_env
    fake_llm.control(latency=0.5)
    group = make_chat(telegram_chat_id=-1009990001)
    bots = [make_bot() for _ in range(3)]
    items = [make_item(bot, group) for bot in bots for _ in range(10)]
    set_batch_mode(30)
    lease = 10
    env = process_env(settings, BATCH_LEASE_SECONDS=str(lease))
    worker = start(env, "rqworker", "default")
    tick = start(env, "tick", "--loop", "--interval", "0.5")
    try:
        wait_for(lambda: len(fake_telegram.messages()) >= 6
                 and Message.objects.filter(status="pending").exists(), 90,
                 "a reply waiting for its slot after the first sends")
        kill_hard(worker)  # the worker and its work-horse (a session of its own)
        waiting = set(Message.objects.filter(status="pending").values_list("id", flat=True))
        assert waiting  # replies were waiting for their slots at the kill
        restarted = time.monotonic()
        worker = start(env, "rqworker", "default")
        wait_for(lambda: not Message.objects.filter(id__in=waiting).exclude(
            status="sent").exists(), lease + 30, "the waiting replies sent")
        resent_after = time.monotonic() - restarted
        wait_for(lambda: not QueueItem.objects.filter(status__in=["pending", "claimed"])
                 .exists(), 180, "every item settled")
    finally:
        stop(tick)
        stop(worker)

    # The replies that waited at the kill went out within a lease of the worker's return,
    # without being written again: one generation each.
    assert resent_after < lease + 15, resent_after
    owed = Message.objects.filter(id__in=waiting).values("queue_item_id")
    assert Generation.objects.filter(queue_item_id__in=owed).count() == len(waiting)
    outcomes = Counter(
        (item.status, Message.objects.filter(queue_item=item).values_list("status", flat=True)
         .first()) for item in QueueItem.objects.all())
    assert set(outcomes) <= {("done", "sent"), ("dead", "send_unknown")}, outcomes
    # Only a request in flight at the kill may be unknown.
    assert outcomes[("dead", "send_unknown")] <= 1, outcomes
    assert outcomes[("done", "sent")] + outcomes[("dead", "send_unknown")] == len(items)
    # Exactly once: Telegram got each sent message's text once, and nothing else.
    delivered = Counter(m["text"] for m in fake_telegram.messages())
    sent = Counter(Message.objects.filter(status="sent").values_list("text", flat=True))
    assert all(delivered[text] == count for text, count in sent.items())
    assert sum(delivered.values()) - sum(sent.values()) <= outcomes[("dead", "send_unknown")]
