"""Budgets scoped as the providers count them, limits learned from replies (real Redis)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from batchgen.llm import config
from batchgen.llm.limits.learned import BudgetId, Learner, budget_for, budget_table
from batchgen.llm.limits.rules import Aimd
from batchgen.state import shared

BUDGET = BudgetId("openai", "gpt-4o-mini")


@pytest.fixture(autouse=True)
def fresh(redis_url, settings):
    shared.reset()  # forgets the process's learners too
    yield
    shared.reset()


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def advertised(rpm: int, tpm: int | None = None) -> dict[str, str]:
    headers = {"x-ratelimit-limit-requests": str(rpm), "x-ratelimit-remaining-requests": "0",
               "x-ratelimit-reset-requests": "120ms"}
    if tpm:
        headers.update({"x-ratelimit-limit-tokens": str(tpm),
                        "x-ratelimit-reset-tokens": "6m0s"})
    return headers


def test_all_keys_of_a_provider_share_one_budget_per_model_by_default():
    assert budget_for("openai", "m", "fp1") == budget_for("openai", "m", "fp2")
    assert budget_for("openai", "m", "fp1") != budget_for("openai", "other", "fp1")
    assert budget_for("openai", "m", "fp1").name == "openai:m"


def test_a_key_scope_gives_each_key_its_own_budget():
    assert budget_for("groq", "m", "fp1", "key") != budget_for("groq", "m", "fp2", "key")
    assert budget_for("groq", "m", "fp1", "key").name == "groq:m:key:fp1"


def test_the_llm_wide_scope_applies_unless_the_provider_says_otherwise(settings):
    settings.LLM_RATE_LIMIT_SCOPE = "key"
    settings.OPENAI_RATE_LIMIT_SCOPE = "account"
    settings.GEMINI_RATE_LIMIT_SCOPE = ""

    assert (config.rate_limit_scope("gemini"), config.rate_limit_scope("openai")) == \
        ("key", "account")


def test_a_bad_scope_is_refused_naming_the_variable(settings):
    settings.OPENAI_RATE_LIMIT_SCOPE = "organisation"

    with pytest.raises(ImproperlyConfigured, match="OPENAI_RATE_LIMIT_SCOPE.*account, key"):
        config.rate_limit_scope("openai")


def test_headers_of_a_reply_become_the_budgets_limits():
    learner = Learner(BUDGET)
    learner.observe(advertised(300, 150000), 200)

    limits = learner.limits()
    assert (limits.rpm, limits.rpm_source, limits.tpm, limits.tpm_source) == \
        (300, "advertised", 150000, "advertised")


def test_a_configured_limit_stays_a_ceiling_over_an_advertised_one():
    learner = Learner(BUDGET, configured_rpm=120)
    learner.observe(advertised(300), 200)
    assert (learner.limits().rpm, learner.limits().rpm_source) == (120, "configured")

    lower = Learner(BUDGET, configured_rpm=600)
    assert (lower.limits().rpm, lower.limits().rpm_source) == (300, "advertised")


def test_a_429_that_advertises_a_lower_limit_lowers_it_for_everybody():
    Learner(BUDGET).observe(advertised(300), 200)
    Learner(BUDGET).observe(advertised(150), 429)

    assert Learner(BUDGET).limits().rpm == 150


def test_groqs_per_day_request_limit_is_not_taken_for_a_per_minute_one():
    learner = Learner(BudgetId("groq", "llama"))
    learner.observe(advertised(14400, 6000), 200)

    limits = learner.limits()
    assert (limits.rpm, limits.tpm) == (None, 6000)


def test_a_bare_429_infers_a_rate_from_what_the_provider_accepted():
    clock = Clock()
    learner = Learner(BUDGET, clock=clock)
    for _ in range(100):
        learner.observe({}, 200)
    learner.observe({"retry-after": "3"}, 429)

    limits = Learner(BUDGET, clock=clock).limits()  # another worker sees it
    assert (limits.rpm, limits.rpm_source) == (80, "inferred")


def test_steady_success_raises_the_inferred_rate_again_for_everybody():
    clock = Clock()
    aimd = Aimd(decrease=0.5, increase=0.1, interval=5.0, cooldown=5.0)
    learner = Learner(BUDGET, clock=clock, aimd=aimd)
    for _ in range(40):
        learner.observe({}, 200)
    learner.observe({}, 429)
    assert learner.limits().rpm == 20

    for _ in range(3):
        clock.now += 5.0
        learner.observe({}, 200)

    assert Learner(BUDGET, clock=clock).limits().rpm == 26  # three steps of 2


def test_429s_of_one_overshoot_lower_the_rate_once():
    clock = Clock()
    learner = Learner(BUDGET, clock=clock)
    for _ in range(50):
        learner.observe({}, 200)
    for _ in range(10):
        learner.observe({}, 429)

    assert learner.limits().rpm == 40


def test_an_inferred_rate_never_climbs_over_the_configured_limit():
    clock = Clock()
    learner = Learner(BUDGET, configured_rpm=60, clock=clock,
                      aimd=Aimd(decrease=0.5, increase=0.5, interval=1.0))
    for _ in range(100):
        learner.observe({}, 200)
    learner.observe({}, 429)
    assert learner.limits().rpm_source == "inferred"  # 30, under the configured 60

    for _ in range(10):
        clock.now += 1.0
        learner.observe({}, 200)
    assert (learner.limits().rpm, learner.limits().rpm_source) == (60, "configured")


def test_without_redis_the_configured_limit_applies(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    learner = Learner(BUDGET, configured_rpm=90)
    learner.observe(advertised(300), 429)

    assert (learner.limits().rpm, learner.limits().rpm_source) == (90, "configured")


def test_the_dashboard_table_says_where_each_limit_came_from():
    Learner(BUDGET).observe(advertised(300, 90000), 200)
    gemini = Learner(budget_for("gemini", "flash", "abc123", "key"))
    for _ in range(10):
        gemini.observe({}, 200)
    gemini.observe({}, 429)

    rows = budget_table(lambda provider: (120, None) if provider == "openai" else (None, None))

    assert [(r["provider"], r["scope"], r["rpm"], r["rpm_source"], r["tpm_source"])
            for r in rows] == [("gemini", "key", 8, "inferred", None),
                               ("openai", "account", 120, "configured", "advertised")]
    assert rows[1]["advertised_rpm"] == 300


def test_the_dashboard_table_reads_the_configured_limits_from_settings(settings):
    settings.LLM_RPM_LIMIT = 200
    Learner(BUDGET).observe(advertised(300), 200)

    [row] = budget_table()

    assert (row["rpm"], row["rpm_source"], row["advertised_rpm"]) == (200, "configured", 300)


@pytest.mark.django_db
def test_the_dashboard_shows_each_budget_with_its_limits_and_their_sources(admin_client):
    Learner(BUDGET).observe(advertised(300, 90000), 200)

    page = admin_client.get("/dashboard/").content.decode()

    card = page[page.index('data-card="budgets"'):]
    card = card[:card.index("</div>")]
    assert "openai · gpt-4o-mini" in card
    assert "300 RPM · 90000 TPM" in card and "advertised / advertised" in card
