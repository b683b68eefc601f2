"""Every door, fuzzed with Hypothesis: webhook bodies (random JSON, control characters, lone
surrogates, deep nesting, huge numbers, bytes), the admin's forms and the dashboard's query
strings, the admin's changelist filters, lookups, search and autocomplete. No answer is a 500,
nothing is stored wrong, and the tick's processor still works.

The default run is short, and shorter on PostgreSQL. The issue's target counts (>= 10,000
webhook bodies, >= 2,000 admin and dashboard inputs) on PostgreSQL, with the answers printed
per door: ``make fuzz-doors``; on either database:

    DOORS_FUZZ_EXAMPLES=10000 pytest -s -p no:xdist tests/unit/test_doors_fuzz.py
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from urllib.parse import quote

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batchgen.conversations.updates import process_pending
from batchgen.core.bot_tokens import token_problem
from batchgen.core.json_input import storable_json
from batchgen.models import BatchRun, Bot, Setting
from batchgen.models.conversations import ChatMessage, ProcessedUpdate
from batchgen.models.secrets import webhook_digest
from tests.databases import ON_BOTH_DATABASES
from tests.factories import make_bot, make_chat, make_item
from tests.intake_support import make_intake_bot, text_message, update

pytestmark = pytest.mark.django_db

CHOSEN = os.environ.get("DOORS_FUZZ_EXAMPLES")


def counts(database: str) -> tuple[int, int]:
    """How many webhook bodies, and how many inputs for each admin or dashboard door. Ten
    doors share the issue's 2,000: 333 inputs each at 10,000. Unchosen, make test's
    PostgreSQL pass runs a shorter fuzz than its SQLite pass: CI waits for both."""
    if CHOSEN:
        return int(CHOSEN), max(25, int(CHOSEN) // 30)
    return (150, 25) if database == "default" else (60, 12)
SECRET = "fuzz-webhook-secret"


def fuzz(examples: int):
    return settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                    suppress_health_check=list(HealthCheck))


class Answers:
    """The answers at each door: by status code, and at the webhook by outcome word too;
    ``report`` prints a line per door (``make fuzz-doors`` shows them)."""

    OUTCOMES = ("accepted", "duplicate", "malformed", "failed")

    def __init__(self) -> None:
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.outcomes: dict[str, Counter] = defaultdict(Counter)

    def count(self, door: str, status: int, outcome: str | None = None) -> None:
        self.statuses[door][status] += 1
        if outcome is not None:
            self.outcomes[door][outcome] += 1

    def total(self) -> int:
        return sum(counts.total() for counts in self.statuses.values())

    def report(self) -> None:
        for door, statuses in self.statuses.items():
            line = (f"fuzz {door}: {statuses.total()} inputs, answers by status "
                    f"{dict(sorted(statuses.items()))}")
            if door in self.outcomes:
                line += ", outcomes " + ", ".join(f"{name} {self.outcomes[door][name]}"
                                                  for name in self.OUTCOMES)
            print(f"\n{line}")


# --- Strategies ------------------------------------------------------------------------

# Characters that broke a door once, and every other code point, surrogates included.
NASTY = st.sampled_from(["\x00", "\ud800", "\udfff", "\x1f", "\x7f", "\r\n", "\u2028", "\ufeff",
                         "\U0001f468\u200d\U0001f469", "%", "&", "=", "'", '"', "\\", "<b>"])
CHARS = st.one_of(NASTY, st.characters(exclude_categories=()))
TEXT = st.lists(CHARS, max_size=40).map("".join)
NUMBERS = st.one_of(st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False))
JSON = st.recursive(st.one_of(st.none(), st.booleans(), NUMBERS, TEXT),
                    lambda children: st.one_of(st.lists(children, max_size=4),
                                               st.dictionaries(TEXT, children, max_size=4)),
                    max_leaves=25)


class UpdateIds:
    """A new update_id for each body, so it reaches the insert (drawn from a small range, half
    the bodies repeated an earlier id and stopped at "duplicate"), except every 20th: one of
    the last few ids again, a deliberate redelivery."""

    def __init__(self) -> None:
        self.drawn = self.last = 0

    def next(self, _: object = None) -> int:
        self.drawn += 1
        if self.drawn % 20 == 0:
            return max(1, self.last - 3)
        self.last += 1
        return self.last


IDS = UpdateIds()
# One in twenty: any integer, or an edge of the 64-bit range.
UPDATE_IDS = st.sampled_from(range(20)).flatmap(lambda pick: (
    st.one_of(st.integers(), st.sampled_from([2**63 - 1, 2**63, -(2**63), 0])) if pick == 0
    else st.just(None).map(IDS.next)))


@st.composite
def messages(draw) -> dict:
    """A text message with some of its fields replaced by anything."""
    message = text_message(draw(st.integers(1, 10**6)), draw(st.integers(-10**13, 10**13)),
                           draw(TEXT), first_name=draw(TEXT))
    for name in draw(st.lists(st.sampled_from(["text", "chat", "from", "message_id", "date",
                                               "reply_to_message", draw(TEXT)]), max_size=3)):
        message[name] = draw(JSON)
    return message


def dumped(value: object) -> bytes:
    return json.dumps(value).encode()  # ensure_ascii: lone surrogates travel as \\udxxx


def _nested(update_id: int, depth: int, opener: str) -> bytes:
    inner = ("[" * depth + "]" * depth if opener == "["
             else '{"a":' * depth + "1" + "}" * depth)
    return f'{{"update_id": {update_id}, "message": {inner}}}'.encode()


NESTED = st.builds(_nested, UPDATE_IDS, st.integers(1, 6000), st.sampled_from(["[", "{"]))
HUGE = st.builds(lambda uid, number: f'{{"update_id": {uid}, "message": {{"date": {number}}}}}'
                 .encode(), UPDATE_IDS,
                 st.one_of(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e999",
                                            "1" * 4301, "9" * 5000, "1e-400", "0." + "0" * 400]),
                           st.integers(min_value=-(10**300), max_value=10**300).map(str)))
BODIES = st.one_of(
    st.builds(lambda uid, message: dumped(update(uid, message=message)), UPDATE_IDS, messages()),
    st.builds(lambda uid, rest: dumped({"update_id": uid, **rest}), UPDATE_IDS,
              st.dictionaries(TEXT, JSON, max_size=4)),
    JSON.map(dumped),
    NESTED, HUGE,
    st.binary(max_size=300),
)


# --- Webhook ---------------------------------------------------------------------------

@ON_BOTH_DATABASES
def test_no_webhook_body_gets_a_500_and_processing_goes_on(database: str) -> None:
    examples, _ = counts(database)
    bot = make_intake_bot(webhook_secret=webhook_digest(SECRET))
    url = reverse("intake:webhook", args=[bot.id])
    client, answers = Client(), Answers()

    @fuzz(examples)
    @given(body=BODIES)
    def post(body: bytes) -> None:
        response = client.post(url, data=body, content_type="application/json",
                               HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=SECRET)
        answers.count("webhook bodies", response.status_code, response.json().get("outcome"))
        assert response.status_code == 200, body[:200]

    post()
    answers.report()
    assert answers.total() >= examples
    # Most bodies reach the insert: a redelivery is a deliberate few, not half of them.
    assert answers.outcomes["webhook bodies"]["duplicate"] <= answers.total() * 0.2
    # Nothing stored wrong: every kept payload is storable as it is.
    for payload in ProcessedUpdate.objects.exclude(payload=None).values_list("payload",
                                                                             flat=True):
        assert storable_json(payload)[1] == 0
    # The processor goes through all of it, and a normal message after it is stored.
    while process_pending():
        pass
    assert not ProcessedUpdate.objects.filter(pending=True).exists()
    body = dumped(update(2**62, message=text_message(1, -777, "still listening")))
    client.post(url, data=body, content_type="application/json",
                HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=SECRET)
    assert process_pending() == {"stored": 1}
    assert ChatMessage.objects.filter(text="still listening").exists()


def _encoded(text: str) -> str:
    return quote(text, safe="", errors="surrogatepass")


# --- Admin forms -----------------------------------------------------------------------

SETTING_VALUES = st.one_of(JSON.map(json.dumps), TEXT, st.integers(1, 3000).map(
    lambda depth: "[" * depth + "]" * depth), st.sampled_from(["NaN", "1e999", "true", "25"]))
TOKENS = st.one_of(TEXT, st.builds(lambda n, rest: f"{n}:{rest}", st.integers(0, 10**12),
                                   TEXT), st.from_regex(r"[0-9]{1,10}:[A-Za-z0-9_-]{1,40}",
                                                        fullmatch=True))


@ON_BOTH_DATABASES
def test_no_admin_form_input_gets_a_500_and_what_is_saved_is_valid(staff_client, telegram_env,
                                                                   database: str) -> None:
    _, small = counts(database)
    Setting.ensure_defaults()
    settings_by_key = dict(Setting.objects.values_list("key", "id"))
    bot, chat = make_bot("fuzzed", telegram_token="5:KEPT"), make_chat()
    answers = Answers()

    def send(door: str, url: str, data: dict) -> None:
        # Encoded by hand: a lone surrogate goes as the invalid UTF-8 a client could send.
        body = "&".join(f"{_encoded(k)}={_encoded(str(v))}" for k, v in data.items())
        response = staff_client.post(url, body, content_type="application/x-www-form-urlencoded")
        answers.count(f"admin form: {door}", response.status_code)
        assert response.status_code in (200, 302), data

    @fuzz(small)
    @given(key=st.sampled_from(sorted(settings_by_key)), value=SETTING_VALUES)
    def setting(key: str, value: str) -> None:
        send("setting", reverse("admin:batchgen_setting_change", args=[settings_by_key[key]]),
             {"key": key, "value": value})

    @fuzz(small)
    @given(name=TEXT, token=TOKENS, persona=TEXT, prompt=TEXT, new=st.booleans())
    def bot_form(name: str, token: str, persona: str, prompt: str, new: bool) -> None:
        url = reverse("admin:batchgen_bot_add") if new else reverse(
            "admin:batchgen_bot_change", args=[bot.pk])
        send("bot", url, {"name": name, "telegram_token": token, "persona": persona,
                   "system_prompt": prompt, "is_active": "on"})

    @fuzz(small)
    @given(title=TEXT, zone=st.one_of(TEXT, st.sampled_from(["Europe/Berlin", "../../etc",
                                                            "UTC\x00"])),
           start=TEXT, end=st.sampled_from(["", "07:00", "25:61", "\x00"]),
           turns=st.one_of(st.integers(), st.integers(min_value=-10, max_value=2**70)).map(str))
    def chat_form(title: str, zone: str, start: str, end: str, turns: str) -> None:
        send("chat behaviour", reverse("admin:batchgen_chatbehaviour_change", args=[chat.pk]),
             {"title": title, "is_active": "on", "time_zone": zone, "quiet_start": start,
              "quiet_end": end, "max_bot_turns": turns, "memberships-TOTAL_FORMS": "0",
              "memberships-INITIAL_FORMS": "0"})

    @fuzz(small)
    @given(priority=st.one_of(TEXT, st.integers(min_value=-(2**70), max_value=2**70).map(str)))
    def queue_item_form(priority: str) -> None:
        send("queue item", reverse("admin:batchgen_queueitem_add"),
             {"bot": bot.pk, "chat": chat.pk, "priority": priority})

    for door in (setting, bot_form, chat_form, queue_item_form):
        door()
    answers.report()
    assert answers.total() >= 4 * small
    # Nothing stored wrong: every setting passes its rule, every token has a token's shape.
    for key, value in Setting.objects.values_list("key", "value"):
        Setting.RULES[key](value)
    assert all(not token_problem(token)
               for token in Bot.objects.values_list("telegram_token", flat=True))


# --- Dashboard query strings -----------------------------------------------------------

FIELDS = st.one_of(st.sampled_from(["mode", "status", "provider", "date_from", "date_to",
                                    "page"]), TEXT)
VALUES = st.one_of(TEXT, st.sampled_from(["batch", "single", "done", "openai", "9999-12-31",
                                          "0001-01-01", "2026-02-30", "-1", "0", "9" * 5000,
                                          "1e400", "NaN"]),
                   st.integers().map(str), st.dates().map(str))


def _query(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{_encoded(name)}={_encoded(value)}" for name, value in pairs)


QUERIES = st.one_of(
    st.lists(st.tuples(FIELDS, VALUES), max_size=8).map(_query),
    st.text(alphabet="%&=;+?#abc019\\\x00", max_size=60),
)


@ON_BOTH_DATABASES
def test_no_dashboard_query_string_gets_a_500(staff_client, database: str) -> None:
    _, small = counts(database)
    BatchRun.objects.create(mode="batch", size=2)
    answers = Answers()
    paths = [reverse("dashboard:index"), reverse("dashboard:live"),
             reverse("dashboard:api_batches")]

    @fuzz(small * 2)
    @given(path=st.sampled_from(paths), query=QUERIES)
    def get(path: str, query: str) -> None:
        response = staff_client.get(f"{path}?{query}")
        answers.count(f"dashboard {path}", response.status_code)
        assert response.status_code in (200, 400), query[:200]
        if response.status_code == 400:  # the API names what it refused
            assert response.json()["errors"]

    @fuzz(small)
    @given(run_id=st.one_of(st.integers(min_value=0), st.integers(min_value=2**63 - 2)))
    def detail(run_id: int) -> None:
        response = staff_client.get(f"/dashboard/batches/{run_id}/")
        answers.count("dashboard /dashboard/batches/<id>/", response.status_code)
        assert response.status_code in (200, 404)

    get()
    detail()
    answers.report()
    assert answers.total() >= 3 * small


# --- Admin changelists: filters, lookups, search, autocomplete ---------------------------

CHANGELISTS = ["bot", "chat", "setting", "queueitem", "batchrun", "generation", "message",
               "providerbatch", "chatbehaviour", "membership", "chatmessage", "trigger"]
# Every list filter's parameter, Django's own (search, ordering, page, popup) and lookups no
# filter offers (refused with a 400 or Django's ?e=1 redirect).
PARAMETERS = st.one_of(st.sampled_from([
    "q", "o", "p", "e", "all", "_to_field", "_popup", "status", "mode", "provider", "cause",
    "cause_provider", "paused", "is_active", "chat_type", "error_kind", "ok", "kind",
    "from_human", "chat__id__exact", "bot__id__exact", "created_at__year", "created_at__month",
    "created_at__day", "status__in", "status__exact", "provider__isnull", "id__gt",
    "bot__telegram_token__startswith"]), TEXT)
# A NUL anywhere in a value was a 500 on PostgreSQL: drawn often enough to be met in a short run.
ADMIN_VALUES = st.one_of(VALUES, st.builds("{}\x00{}".format, TEXT, TEXT))


def _row_counts() -> dict[str, int]:
    from django.apps import apps

    return {model.__name__: model.objects.count()
            for model in apps.get_app_config("batchgen").get_models()}


@ON_BOTH_DATABASES
def test_no_admin_changelist_search_or_autocomplete_gets_a_500(staff_client,
                                                               database: str) -> None:
    _, small = counts(database)
    Setting.ensure_defaults()  # the settings changelist adds the defaults on its first GET
    bot = make_bot("listed", telegram_token="5:LISTED")
    make_item(bot, make_chat(title="Lounge"))
    BatchRun.objects.create(mode="batch", size=2, provider="openai")
    before, answers = _row_counts(), Answers()

    def get(door: str, url: str, allowed: tuple[int, ...]) -> None:
        response = staff_client.get(url)
        answers.count(door, response.status_code)
        assert response.status_code in allowed, url[:300]

    # The audit's 500s on PostgreSQL, met in every run however short.
    @fuzz(small)
    @given(model=st.sampled_from(CHANGELISTS),
           pairs=st.lists(st.tuples(PARAMETERS, ADMIN_VALUES), max_size=5))
    @example(model="queueitem", pairs=[("status", "\x00")])
    @example(model="queueitem", pairs=[("cause", "\x00")])
    @example(model="batchrun", pairs=[("provider", "\x00")])
    def changelist(model: str, pairs: list[tuple[str, str]]) -> None:
        # 302: Django's ?e=1 for a lookup it cannot apply; 400: a lookup refused.
        get("admin changelist filters and lookups",
            f"{reverse(f'admin:batchgen_{model}_changelist')}?{_query(pairs)}", (200, 302, 400))

    @fuzz(small)
    @given(model=st.sampled_from(CHANGELISTS), term=st.one_of(TEXT, ADMIN_VALUES))
    @example(model="queueitem", term="\x00")
    def search(model: str, term: str) -> None:
        get("admin search", f"{reverse(f'admin:batchgen_{model}_changelist')}?"
            f"{_query([('q', term)])}", (200, 302, 400))

    @fuzz(small)
    @given(field=st.one_of(st.sampled_from(["bot", "chat"]), TEXT),
           model=st.one_of(st.just("queueitem"), TEXT), term=ADMIN_VALUES)
    @example(field="bot", model="queueitem", term="\x00")
    def autocomplete(field: str, model: str, term: str) -> None:
        # 403: Django's answer for a model or field that has no autocomplete.
        query = _query([("app_label", "batchgen"), ("model_name", model),
                        ("field_name", field), ("term", term)])
        get("admin autocomplete", f"/admin/autocomplete/?{query}", (200, 403))

    for door in (changelist, search, autocomplete):
        door()
    answers.report()
    assert answers.total() >= 3 * small
    assert _row_counts() == before  # a GET stores nothing
