"""One run's refilling loop: keep N prompts in flight and claim the next item as each finishes.
The loop's thread does every database write (the LLM pool's and the outbox's threads only do
HTTP), and a failure settles only its own item with the reason while the run goes on. Why it
refills rather than going in lock-step: docs/design.md, "Runs, the drain and the tick".
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from queue import Empty, SimpleQueue
from typing import TypeVar

from django.conf import settings
from django.db import DatabaseError, close_old_connections, transaction
from django.utils import timezone

from batchgen import metrics
from batchgen.conversations import history, prompting
from batchgen.core import pricing
from batchgen.core.priorities import URGENT_PRIORITY
from batchgen.core.prompts import UserPrompt, build_user_prompt
from batchgen.core.text import storable
from batchgen.delivery import live_settings, routes
from batchgen.llm import GenerationResult, LLMBatchClient, LLMClient
from batchgen.llm import errors as llm_errors
from batchgen.llm.limits import budgets
from batchgen.models import BatchRun, Generation, QueueItem
from batchgen.telegram import client as telegram
from batchgen.work import outbox, queue

log = logging.getLogger(__name__)
Mode = BatchRun.Mode
# A run saves the replies that finished within this long of each other in one transaction
# (their sends start when it commits), and records finished sends as often: a transaction per
# reply costs a worker far more CPU (docs/design.md, "The hot path"). The freed slots are
# refilled at once, so the provider never waits on this.
GROUP_WITHIN_S = 0.1
# After a claim finds the queue dry, the next waits this long: as a run's last replies come
# in, an empty claim per reply, on the loop's thread, would delay saving them.
DRY_RECHECK_S = 0.25


@dataclass(frozen=True)
class Work:
    item: QueueItem
    prompt: str
    system_prompt: str
    fitted: UserPrompt  # what was left out of the user prompt to fit its budget
    cache_key: str = ""


Results = list[tuple[Work, GenerationResult]]


class Heartbeat:
    """Renews the run's leases every third of a lease, so a healthy run keeps its items
    however long it drains, and a killed run's items return within one lease."""

    def __init__(self, run: BatchRun, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = timezone.now) -> None:
        self.run, self._clock, self._now = run, clock, now
        self.lease = float(settings.BATCH_LEASE_SECONDS)
        self.interval = max(0.5, self.lease / 3)
        self._due = clock() + self.interval

    def beat(self, force: bool = False) -> bool:
        if not force and self._clock() < self._due:
            return False
        now = self._now()
        queue.renew(self.run, self.lease, now=now)
        BatchRun.objects.filter(id=self.run.id).update(heartbeat_at=now, size=self.run.size)
        self._due = self._clock() + self.interval
        return True


class HeldTime:
    """Why a run's slots are not all busy, timed for "what limits throughput now"
    (``metrics.observe_held``): ``slots`` while claimed work waits for a free slot,
    ``pacing`` while pending work waits for its chat's posting slot, ``idle`` while the
    queue is empty. Flushed about once a second, in one round trip."""

    FLUSH_S = 1.0

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._since = clock()
        self._reason = ""
        self._held: dict[str, float] = {}
        self._flush_at = self._since + self.FLUSH_S

    def now_held_by(self, reason: str) -> None:
        now = self._clock()
        if self._reason:
            self._held[self._reason] = self._held.get(self._reason, 0.0) + now - self._since
        self._since, self._reason = now, reason
        if now >= self._flush_at:
            self.flush()

    def flush(self) -> None:
        with metrics.batched():
            for reason, seconds in self._held.items():
                metrics.observe_held(reason, seconds)
        self._held.clear()
        self._flush_at = self._clock() + self.FLUSH_S


T = TypeVar("T")


def reconnecting(operation: Callable[[], T]) -> T:
    """Run a database step; if the connection died (killed backend, failover), drop it and
    run the step once more on a fresh one."""
    try:
        return operation()
    except DatabaseError:
        close_old_connections()
        return operation()


class Drain:
    """Claims, generates, saves and sends for one run until it runs dry or hits its bound."""

    def __init__(self, run: BatchRun, delivery: outbox.Delivery,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.run, self.delivery, self._clock, self._sleep = run, delivery, clock, sleep
        self.target = max(run.workers, 1)
        self.refills = run.mode != Mode.MULTI_BOT
        self.deadline = clock() + settings.BATCH_DRAIN_MAX_SECONDS
        self.max_items = settings.BATCH_DRAIN_MAX_ITEMS
        self.unusable: Counter[str] = Counter()
        self.stopped = ""  # why refilling stopped before the queue ran dry
        self.heartbeat = Heartbeat(run, clock)
        # Claimed a few ahead, so a refill is one claim per several replies, not one each;
        # an urgent item then waits behind at most this many.
        self.prefetch = max(1, self.target // 4)
        self._ready: deque[QueueItem] = deque()
        self._dry_until = 0.0  # the queue was found dry: no claim before then
        self._slot_wake = 0.0  # when the next posting slot comes near (nothing in flight)
        self.held = HeldTime(clock)
        # The mean generation latency seen so far (moving average): an item is claimed about
        # one generation before its posting slot (``horizon``).
        self.latency = min(1.0, settings.DELIVERY_CLAIM_HORIZON_SECONDS)
        self._short = ""  # why the last claim came back short: "pacing" or "idle"
        self._in_flight: dict[Future[GenerationResult], Work] = {}
        # Every generation and send, as it finishes: the loop wakes for each without
        # scanning all that is in flight.
        self._finished: SimpleQueue[Future] = SimpleQueue()
        if delivery is not None:
            delivery.wake = self._finished.put
        self._submit = _submitter(run)
        # Items whose deadline leaves room wait for the provider batch route, when it is on.
        self.hold_after = routes.hold_after()

    def run_to_end(self) -> None:
        self._take(list(queue.claimed_items(self.run)))  # claimed up front (multi-bot)
        self._refill()
        unsaved: Results = []
        save_by = settle_by = self._clock()
        while self._in_flight or unsaved or self._slot_near():
            wait_s = self.heartbeat.interval
            if unsaved:
                wait_s = max(0.0, min(wait_s, save_by - self._clock()))
            elif not self._in_flight:  # all that is left waits for its posting slot
                wait_s = max(0.0, min(wait_s, self._slot_wake - self._clock()))
            due = self.delivery.next_due_in()
            if due is not None:
                wait_s = min(wait_s, due)
            # A send that finished is recorded within GROUP_WITHIN_S: until then Telegram
            # has the message and the database says "sending" (unknown, were we killed).
            if self.delivery.has_finished_sends():
                wait_s = max(0.0, min(wait_s, settle_by - self._clock()))
            done: list[Future[GenerationResult]] = []
            if self._in_flight or self.delivery.sending():
                done = self._finished_within(wait_s)
            elif not unsaved:
                self._sleep(wait_s)
            if done:
                group = [(self._in_flight.pop(f), _outcome(f)) for f in done]
                self._note_circuit(group)
                self._note_latency(group)
                self._refill()  # the freed slots first: the provider waits on nothing else
                if not unsaved:
                    save_by = self._clock() + GROUP_WITHIN_S
                unsaved.extend(group)
            elif not self._in_flight and not unsaved and self._clock() >= self._slot_wake:
                self._dry_until = 0.0  # a posting slot came near: claim again now
                self._refill()
            if unsaved and (self._clock() >= save_by or not self._in_flight):
                # Replies are saved, and their slots booked, a group at a time.
                self._save(unsaved)
                unsaved = []
            if self._clock() >= settle_by or self.delivery.next_due_in() == 0.0:
                reconnecting(self.delivery.settle)  # sends due, and those that finished
                settle_by = self._clock() + GROUP_WITHIN_S
            reconnecting(self.heartbeat.beat)
            self.held.now_held_by(self._holding())
        self.held.now_held_by("")
        self.held.flush()
        while reconnecting(lambda: self.delivery.settle(timeout=self.heartbeat.interval)):
            reconnecting(self.heartbeat.beat)

    def _finished_within(self, seconds: float) -> list[Future[GenerationResult]]:
        """The generations that finished, waiting up to ``seconds`` for the first thing (a
        generation or a send) to finish; [] when none did or only sends did."""
        got: list[Future] = []
        try:
            got.append(self._finished.get(timeout=seconds) if seconds > 0 else
                       self._finished.get_nowait())
            while True:
                got.append(self._finished.get_nowait())
        except Empty:
            pass
        return [future for future in got if future in self._in_flight]

    def _holding(self) -> str:
        """What keeps this run from more work in flight right now ("" when nothing does)."""
        if len(self._in_flight) >= self.target:
            return "slots" if self._ready else ""
        return self._short

    def _slot_near(self) -> bool:
        """Nothing in flight: is there work waiting for a posting slot that comes soon enough
        to wait for here, rather than end the run and leave it to the next tick?"""
        if not self.refills or self.stopped:
            return False
        at = reconnecting(lambda: queue.next_slot(hold_after=self.hold_after, batch_run=self.run,
                                                  horizon_s=self.horizon))
        if at is None:
            return False
        seconds = max(0.0, (at - timezone.now()).total_seconds())
        if seconds > settings.DELIVERY_SLOT_WAIT_SECONDS or \
                self._clock() + seconds >= self.deadline:
            return False
        self._slot_wake = self._clock() + seconds
        return True

    def _refill(self) -> None:
        live_settings.follow(self, _submitter)  # batch mode and size apply from this refill
        if self.stopped.startswith("the provider") and self._ready:
            # Claimed ahead but not sent to a provider that is away: back, no attempt spent.
            queue.release(self.run, self.stopped, ids=[item.id for item in self._ready])
            self._ready.clear()
        starting: list[QueueItem] = []
        while len(self._in_flight) + len(starting) < self.target:
            if not self._ready and not self._claim(starting):
                break
            starting.append(self._ready.popleft())
        if starting and self.refills:
            # Their posting slots, booked as their replies start (not while they waited in
            # the ready list), in one round trip for the whole refill.
            reconnecting(lambda: queue.book_posting_slots(starting))
        if starting:
            known = self._histories(starting)
            for item in starting:
                self._start(item, known.get(item.chat_id or 0))

    def _claim(self, starting: Sequence[QueueItem] = ()) -> bool:
        """Claim the next items into the ready list; False when there is nothing to claim.
        ``starting``: items taken from the list that are not in flight yet."""
        if not self.refills or self.stopped:
            return False
        room = min(self.target - len(self._in_flight) - len(starting) + self.prefetch,
                   self.max_items - self.run.size)
        if room <= 0:
            self.stopped = f"reached BATCH_DRAIN_MAX_ITEMS ({self.max_items})"
            return False
        if self._clock() >= self.deadline:
            self.stopped = "reached BATCH_DRAIN_MAX_SECONDS"
            return False
        if self._clock() < self._dry_until:
            return False  # found dry a moment ago: do not ask again on every finished reply
        self._take(reconnecting(lambda: queue.claim(room, self.run, hold_after=self.hold_after,
                                                    lead_s=self.horizon,
                                                    max_non_urgent=self._non_urgent_room(
                                                        starting))))
        self._short = ""
        if not self._ready:  # dry for now; a finish after DRY_RECHECK_S tries again
            self._dry_until = self._clock() + DRY_RECHECK_S
            waiting = reconnecting(lambda: queue.next_slot(hold_after=self.hold_after,
                                                           batch_run=self.run,
                                                           horizon_s=self.horizon))
            self._short = "pacing" if waiting is not None else (
                "cap" if reconnecting(queue.has_capped) else "idle")
        return bool(self._ready)

    def _take(self, items: list[QueueItem]) -> None:
        self.run.size += len(items)
        fresh = outbox.resume(items, self.delivery)
        self.unusable["resumed_from_outbox"] += len(items) - len(fresh)
        self._ready.extend(grouped_by_bot(fresh))

    @staticmethod
    def _histories(items: list[QueueItem]) -> dict[int, list[history.Line]]:
        """The chats' histories as their generations start, one statement for the refill;
        on a failure, each item reads its own (and a failure there is that item's)."""
        try:
            return reconnecting(lambda: history.lines_of(
                item.chat for item in items if item.chat is not None))
        except Exception:
            log.exception("the refill's chat histories could not be read together")
            return {}

    def _start(self, item: QueueItem, known: list[history.Line] | None = None) -> None:
        try:
            # Often the first database step after a wait: a connection that died meanwhile
            # is replaced here, not blamed on the item.
            work = reconnecting(lambda: prepare_claimed(item, known))
            if work is None:
                self.unusable["invalid_item"] += 1
            else:
                future = self._submit(work)
                self._in_flight[future] = work
                future.add_done_callback(self._finished.put)
        except Exception as exc:  # one unusable item must not stop the run
            log.exception("item %s could not be started", item.id)
            reason = f"could not build or submit its prompt: {_describe(exc)}"
            reconnecting(lambda: queue.kill(item, reason))
            self.unusable["invalid_item"] += 1

    def _non_urgent_room(self, starting: Sequence[QueueItem] = ()) -> int | None:
        """While the LLM rate budget binds, work below ``URGENT_PRIORITY`` (cadence posts,
        bot-to-bot turns) may fill only part of the slots: ``DELIVERY_URGENT_SHARE`` of them
        stay for replies to people. None: no cap (the budget has room)."""
        share = settings.DELIVERY_URGENT_SHARE
        if not share or not budgets.binding():
            return None
        kept = math.ceil(share * self.target)
        busy = sum(1 for work in self._in_flight.values()
                   if work.item.priority < URGENT_PRIORITY)
        busy += sum(1 for item in (*self._ready, *starting) if item.priority < URGENT_PRIORITY)
        return max(0, self.target - kept - busy)

    @property
    def horizon(self) -> float:
        """How far ahead of its posting slot an item is claimed: half again the mean
        latency, so most replies are ready just before their slot rather than just after it
        (a late one pushes its chat's next slots back)."""
        return 1.5 * self.latency + 0.1

    def _note_latency(self, group: Results) -> None:
        for _, result in group:
            if result.ok and result.latency_s is not None:
                self.latency += 0.2 * (min(result.latency_s,
                                           settings.DELIVERY_CLAIM_HORIZON_SECONDS)
                                       - self.latency)

    def _note_circuit(self, group: Results) -> None:
        if any(result.error_kind == llm_errors.CIRCUIT_OPEN for _, result in group):
            self.stopped = "the provider's circuit breaker is open"

    def _save(self, group: Results) -> None:
        try:
            save(self.run, group, self.delivery)
        except Exception:
            # Find the one that fails (a DataError, a dead connection...): each alone.
            close_old_connections()
            for entry in group:
                self._save_alone(entry)

    def _save_alone(self, entry: tuple[Work, GenerationResult]) -> None:
        try:
            reconnecting(lambda: self._save_unsaved(entry))
        except Exception as exc:
            log.exception("reply for item %s could not be saved", entry[0].item.id)
            close_old_connections()
            queue.kill(entry[0].item, f"could not save the reply: {_describe(exc)}",
                       attempted=True)

    def _save_unsaved(self, entry: tuple[Work, GenerationResult]) -> None:
        """Save ``entry`` unless an attempt whose answer was lost (the connection died
        after the COMMIT) already did: its reply then goes out as saved, once."""
        item = entry[0].item
        if outbox.resume([item], self.delivery) and QueueItem.objects.filter(
                id=item.id, status=QueueItem.Status.CLAIMED, batch_run=self.run).exists():
            save(self.run, [entry], self.delivery)


def grouped_by_bot(items: list[QueueItem]) -> list[QueueItem]:
    """One claim's items with each bot's side by side, so the prompts that share a prefix
    reach the provider close together (its prompt cache keeps a prefix for minutes).

    Only items of equal priority move: an urgent item is never put behind a bot's
    less urgent ones, and nothing crosses into another claim."""
    grouped: list[QueueItem] = []
    level: dict[object, list[QueueItem]] = {}
    for index, item in enumerate(items):
        level.setdefault(item.bot_id, []).append(item)
        if index + 1 == len(items) or items[index + 1].priority != item.priority:
            grouped.extend(entry for group in level.values() for entry in group)
            level = {}
    return grouped


def _submitter(run: BatchRun) -> Callable[[Work], Future[GenerationResult]]:
    """Batch mode: the warm pool of LLMBatchClient, ``workers`` threads. Single mode: one item
    at a time through LLMClient (the compatibility API's single-prompt path), on one thread
    so the loop can still renew leases while it waits."""
    if run.mode == Mode.SINGLE:
        single = ThreadPoolExecutor(1, thread_name_prefix="llm-single")
        return lambda work: single.submit(LLMClient().generate_detailed,
                                          user_prompt=work.prompt,
                                          system_prompt=work.system_prompt,
                                          cache_key=work.cache_key)
    client = LLMBatchClient(max_workers=max(run.workers, 1))
    return lambda work: client.submit(work.prompt, system_prompt=work.system_prompt,
                                      cache_key=work.cache_key)


def _outcome(future: Future[GenerationResult]) -> GenerationResult:
    try:
        return future.result()
    except Exception as exc:  # the LLM layer returns results; this is a bug, kept per item
        log.exception("generation raised instead of returning a result")
        return GenerationResult(text=None, error_kind="crash", error_message=_describe(exc))


def _describe(exc: BaseException) -> str:
    return storable(f"{type(exc).__name__}: {exc}")[:500]


def prepare_claimed(item: QueueItem, known: list[history.Line] | None = None) -> Work | None:
    """Turn a claimed item into work, or settle it here and say why. ``known``: its chat's
    history lines, read already."""
    if item.bot is None or item.chat is None:
        queue.kill(item, "its bot was deleted" if item.bot is None else "its chat was deleted")
        return None
    if not item.bot.is_active:
        queue.kill(item, f"bot {item.bot.name!r} is inactive")
        return None
    return prepare(item, known)


def prepare(item: QueueItem, known: list[history.Line] | None = None) -> Work:
    """The prompt for an item whose bot and chat exist."""
    # The chat's history as it is now, so a reply claimed just before its posting slot
    # answers everything said so far (replies coalesce); else the lines given at push time.
    bot, chat = item.bot, item.chat
    assert bot is not None and chat is not None  # prepare_claimed checked both
    recent = history.recent_messages(chat, known=known) or [
        str(m) for m in item.recent_messages or []]
    fitted = build_user_prompt(bot_name=bot.name, persona=bot.persona,
                               chat_title=chat.title, recent_messages=recent)
    return Work(item=item, prompt=storable(fitted.text), fitted=fitted,
                system_prompt=prompting.system_prompt_for(bot),
                cache_key=prompting.cache_key_for(bot))


def save(run: BatchRun, group: Results, delivery: outbox.Delivery, route: str = "sync",
         capped: dict[int, str] | None = None, skip: frozenset[int] = frozenset()) -> None:
    """Record a group of finished generations in one transaction; the replies are
    committed as ``pending`` and each goes out when its posting slot comes, after the
    commit. ``route``: "batch" for results of a provider batch (billed at the batch price).
    ``capped``: item id → the cap that binds its chat or bot: its reply is kept, not sent
    (its item waits for the cap to lift), or, for the ids in ``skip``, skipped."""
    drafts, kept = [], []
    capped = capped or {}
    with transaction.atomic():
        generations = [_generation(run, entry, result) for entry, result in group]
        for generation in generations:
            generation.route = route
        Generation.objects.bulk_create(generations)
        for entry, result in group:
            cap = capped.get(entry.item.id)
            if result.ok and cap and entry.item.id in skip:
                queue.kill(entry.item, f"skipped: {cap}", attempted=True)
            elif result.ok:
                reply = telegram.fit_message(storable(result.text))
                draft = outbox.Draft(entry.item, entry.prompt, reply.text,
                                     result.provider, result.model, reply.cut_chars)
                if cap:
                    kept.append((draft, cap))
                else:
                    drafts.append(draft)
            else:
                _fail(entry.item, result)
        delivery.send_new(drafts)
        outbox.keep_held(kept)
    for _, result in group:
        usage = (result.model, result.prompt_tokens, result.cached_tokens,
                 result.completion_tokens)
        metrics.observe_request(result.provider, result.model,
                                "ok" if result.ok else result.error_kind or "error",
                                result.latency_s, result.prompt_tokens,
                                result.completion_tokens, pricing.cost(*usage, route=route),
                                cached_tokens=result.cached_tokens, route=route,
                                full_cost_usd=pricing.full_cost(*usage))


def _generation(run: BatchRun, entry: Work, result: GenerationResult) -> Generation:
    item = entry.item
    return Generation(
        batch_run=run, queue_item=item, bot=item.bot, chat=item.chat, prompt=entry.prompt,
        text=storable(result.text), ok=result.ok, error_kind=result.error_kind or "",
        error=storable(result.error_message), latency_s=result.latency_s,
        prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
        cached_tokens=result.cached_tokens, attempts=result.attempts,
        provider=result.provider, model=result.model,
        persona_cut=entry.fitted.persona_cut, messages_dropped=entry.fitted.messages_dropped,
    )


def _fail(item: QueueItem, result: GenerationResult) -> None:
    reason = storable(f"{result.error_kind}: {result.error_message}")
    if result.error_kind in llm_errors.UNAVAILABLE_KINDS:
        queue.defer(item, reason, _unavailable_for(result))
    elif result.retryable:
        queue.retry_later(item, reason)
    else:
        queue.kill(item, reason, attempted=True)


def _unavailable_for(result: GenerationResult) -> float:
    """How long the provider said it is away: its Retry-After, else the breaker's own
    half-open time, else the configured back-off."""
    wait_s = getattr(result, "retry_after_s", None)
    if wait_s is None and result.error_kind == llm_errors.CIRCUIT_OPEN:
        from batchgen.state.breakers import get_circuit_breaker_stats

        stats = get_circuit_breaker_stats(f"{result.provider or 'openai'}_api")
        wait_s = stats.get("retry_after")
    return float(wait_s) if wait_s is not None else settings.BATCH_RETRY_BACKOFF_SECONDS
