"""Prompts laid out for the providers' prompt caches: the stable start first, one cache key
per bot, a bot's items sent together, and cached tokens read back from every provider."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from batchgen.conversations import prompting
from batchgen.core.prompts import build_user_prompt, filter_content
from batchgen.delivery import scheduler
from batchgen.delivery.drain import grouped_by_bot, prepare_claimed
from batchgen.fakes.prefix_cache import PrefixCache
from batchgen.llm import LLMClient
from batchgen.models import Generation
from tests.factories import make_bot, make_chat, make_item, set_batch_mode

PERSONA = " ".join(f"Trait {n}: loves markets, tea and long walks by the Bosphorus."
                   for n in range(64))  # ~4,000 characters, the longest the admin takes


def history(n: int, size: int) -> list[str]:
    return [f"member {i} said " + "w" * size for i in range(n)]


def common_start(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))


def test_the_persona_comes_before_the_chat_and_its_messages() -> None:
    text = build_user_prompt("Ayla", PERSONA, "Borsa", ["hello", "how are you"]).text

    assert text.index(PERSONA) < text.index("Borsa") < text.index("- hello")
    assert text.index("- how are you") < text.index("Write Ayla's next message")


def test_one_bots_prompts_start_alike_whatever_the_chat_holds() -> None:
    # A long history once shortened the persona to make room: the start moved with the chat
    # and no provider could reuse it. Now the persona's kept length depends on it alone.
    quiet = build_user_prompt("Ayla", PERSONA, "chat one", history(2, 40)).text
    busy = build_user_prompt("Ayla", PERSONA, "chat two", history(20, 480)).text

    shared = filter_content(quiet)[:common_start(filter_content(quiet), filter_content(busy))]
    assert PERSONA in shared
    assert "chat one" not in shared  # the first thing to differ is the chat


@pytest.mark.django_db
def test_the_work_for_an_item_carries_its_bots_cache_key() -> None:
    bot = make_bot(persona=PERSONA)
    first, second = prepare_claimed(make_item(bot)), prepare_claimed(make_item(bot))
    other = prepare_claimed(make_item(make_bot()))

    assert first.cache_key == second.cache_key == prompting.cache_key_for(bot)
    assert other.cache_key != first.cache_key
    assert PERSONA in first.prompt[:common_start(first.prompt, second.prompt)]


def item(n: int, bot: int, priority: int = 0) -> SimpleNamespace:
    return SimpleNamespace(id=n, bot_id=bot, priority=priority)


def test_a_claims_items_are_grouped_by_bot_without_crossing_priorities() -> None:
    claimed = [item(1, 7, 9), item(2, 8, 9), item(3, 7, 9),  # urgent: bots 7, 8, 7
               item(4, 8, 0), item(5, 7, 0), item(6, 8, 0)]  # then the rest

    order = [entry.id for entry in grouped_by_bot(claimed)]

    assert order == [1, 3, 2, 4, 6, 5]


def test_openai_gets_the_cache_key_and_groq_does_not(llm_env) -> None:
    fake = llm_env("openai")
    LLMClient().generate_detailed("hello", cache_key="bot-42")
    assert fake.stats()["cache_keys"] == {"bot-42": 1}

    llm_env("groq")
    fake.reset()
    LLMClient().generate_detailed("hello", cache_key="bot-42")
    assert fake.stats()["cache_keys"] == {"": 1}


@pytest.mark.parametrize("provider", ["openai", "groq", "gemini"])
def test_each_provider_reports_cached_tokens_when_a_long_start_repeats(llm_env,
                                                                        provider) -> None:
    llm_env(provider)
    client = LLMClient()
    first = client.generate_detailed(f"{PERSONA * 2} first question", system_prompt="Be brief.")
    again = client.generate_detailed(f"{PERSONA * 2} another one", system_prompt="Be brief.")
    short = client.generate_detailed("hi", system_prompt="Be brief.")
    short_again = client.generate_detailed("hi", system_prompt="Be brief.")

    assert first.ok and first.cached_tokens == 0
    assert again.ok and 1024 <= again.cached_tokens < again.prompt_tokens
    assert short_again.prompt_tokens == short.prompt_tokens and short_again.cached_tokens == 0


def test_a_prefix_is_forgotten_after_the_cache_lifetime() -> None:
    now = [0.0]
    cache = PrefixCache(ttl_s=300, clock=lambda: now[0])
    text = "x" * 4096 * 2

    assert cache.cached_tokens("openai/m", text) == 0
    now[0] = 299
    assert cache.cached_tokens("openai/m", text) == 2048
    assert cache.cached_tokens("gemini/m", text) == 0  # another provider's cache
    now[0] = 299 + 301
    assert cache.cached_tokens("openai/m", text) == 0


@pytest.mark.django_db(transaction=True)
def test_a_run_records_cached_tokens_and_bills_them_at_the_cached_rate(pipeline_env,
                                                                        settings) -> None:
    fake_llm, _ = pipeline_env
    settings.LLM_PRICES = {"gpt-4o-mini": (1.0, 0.1, 2.0)}
    bot = make_bot(persona=PERSONA)
    for _ in range(4):
        make_item(bot, make_chat())
    set_batch_mode(1)  # one at a time: each prompt finds the previous one's start cached
    run = scheduler.tick(sync=True).run

    rows = list(Generation.objects.filter(batch_run=run).order_by("id"))
    assert len(rows) == 4 and all(g.ok for g in rows)
    assert rows[0].cached_tokens == 0 and all(g.cached_tokens >= 1024 for g in rows[1:])
    assert sum(g.cached_tokens for g in rows) == sum(fake_llm.stats()["cached_tokens"].values())
    expected = sum((g.prompt_tokens - g.cached_tokens) * 1.0 + g.cached_tokens * 0.1
                   + g.completion_tokens * 2.0 for g in rows) / 1e6
    assert float(run.cost_usd) == pytest.approx(expected, abs=1e-9)
