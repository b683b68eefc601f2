"""LLMBatchClient: order, partial failures, fallback retries, bad input, warm pool."""

from __future__ import annotations

import pytest

from batchgen.llm import MAX_BATCH_SIZE, LLMBatchClient, generate_batch
from batchgen.llm.batch import shared_executor
from batchgen.models import MAX_BATCH_SIZE as MODELS_MAX_BATCH_SIZE


def make_prompts(count: int, faults: dict[int, str] | None = None) -> list[str]:
    faults = faults or {}
    return [f"prompt number {i}" + (f" [[fault:{faults[i]}]]" if i in faults else "")
            for i in range(count)]


def expected_reply(prompt: str) -> str:
    return f"Reply to: {prompt[:60]}"


@pytest.mark.parametrize("provider", ["openai", "groq", "gemini"])
def test_it_keeps_prompt_order_under_random_latencies(llm_env, provider):
    fake = llm_env(provider)
    fake.control(latency=0.001, latency_mode="lognormal", latency_sigma=1.2)
    prompts = make_prompts(20)

    results = LLMBatchClient(max_workers=8).generate_batch(prompts)

    assert results == [expected_reply(p) for p in prompts]


def test_it_returns_none_exactly_where_faults_were_injected(llm_env):
    fake = llm_env()
    fake.control(latency=0.002, jitter=0.01)
    faults = {1: "500", 4: "empty", 7: "safety", 8: "401"}
    prompts = make_prompts(10, faults)

    results = LLMBatchClient(max_workers=10).generate_batch_detailed(prompts)

    assert [i for i, r in enumerate(results) if r.text is None] == sorted(faults)
    assert [r.error_kind for r in results if not r.ok] == [
        "server_error", "empty", "safety_block", "auth"]
    assert all(r.text == expected_reply(p) for r, p in zip(results, prompts, strict=True) if r.ok)


def test_with_fallback_recovers_a_transient_fault(llm_env):
    llm_env()
    prompts = make_prompts(5, {2: "503x1"})
    client = LLMBatchClient(max_workers=5)

    without_retry = client.generate_with_fallback(prompts, retry_failed=False)
    with_retry = client.generate_with_fallback(make_prompts(5, {2: "500x1"}))

    assert without_retry[2] is None
    assert with_retry[2] == expected_reply(make_prompts(5, {2: "500x1"})[2])


def test_with_fallback_does_not_retry_what_a_retry_cannot_fix(llm_env):
    fake = llm_env()

    results = LLMBatchClient(max_workers=2).generate_with_fallback(make_prompts(2, {0: "401"}))

    assert results == [None, expected_reply("prompt number 1")]
    assert fake.stats()["total"] == 2


def test_completion_order_puts_fast_replies_first(llm_env):
    fake = llm_env()
    fake.control(latency=0.0)
    prompts = ["slow one [[fault:timeout]]", "fast one"]
    fake.control(timeout_seconds=0.3)

    texts = LLMBatchClient(max_workers=2).generate_batch(prompts, preserve_order=False)

    assert texts == ["Reply to: fast one", "Reply to: slow one [[fault:timeout]]"]


def test_iter_batch_detailed_yields_indexes_as_replies_finish(llm_env):
    llm_env()
    prompts = make_prompts(6, {3: "content_filter"})

    pairs = list(LLMBatchClient(max_workers=3).iter_batch_detailed(prompts))

    assert sorted(index for index, _ in pairs) == list(range(6))
    by_index = dict(pairs)
    assert by_index[3].error_kind == "content_filter"
    assert by_index[0].text == expected_reply(prompts[0])


def test_generate_many_streams_more_than_one_batch(llm_env):
    fake = llm_env()
    prompts = make_prompts(MAX_BATCH_SIZE + 25)

    results = LLMBatchClient(max_workers=16).generate_many_detailed(prompts)

    assert [r.text for r in results] == [expected_reply(p) for p in prompts]
    assert fake.stats()["total"] == len(prompts)


def test_the_module_level_one_liner_works(llm_env):
    llm_env()

    assert generate_batch(["hi there"], temperature=0.2) == ["Reply to: hi there"]


def test_max_batch_size_is_the_models_limit():
    assert MAX_BATCH_SIZE == MODELS_MAX_BATCH_SIZE == 50


def test_an_empty_batch_is_an_empty_list(llm_env):
    fake = llm_env()

    assert LLMBatchClient().generate_batch([]) == []
    assert fake.stats()["total"] == 0


@pytest.mark.parametrize(("prompts", "error", "message"), [
    (["ok", None], TypeError, "prompt 1"),
    (["ok", "fine", 42], TypeError, "prompt 2"),
    (["ok", "   \n\t"], ValueError, "prompt 1"),
    ([""], ValueError, "prompt 0"),
    (["ok", "fine", "\u200b\u2028\ufeff \x00"], ValueError, "prompt 2"),  # only invisible
    (["x"] * (MAX_BATCH_SIZE + 1), ValueError, "50"),
])
def test_bad_input_is_refused_before_anything_is_sent(llm_env, prompts, error, message):
    fake = llm_env()

    with pytest.raises(error, match=message):
        LLMBatchClient(max_workers=4).generate_batch(prompts)
    assert fake.stats()["total"] == 0


def test_a_single_string_is_not_mistaken_for_a_list(llm_env):
    llm_env()

    with pytest.raises(TypeError, match="list of str"):
        LLMBatchClient().generate_batch("hello")


def test_workers_default_to_batch_max_workers(llm_env, settings):
    llm_env(BATCH_MAX_WORKERS=7)
    assert LLMBatchClient().max_workers == 7
    settings.BATCH_MAX_WORKERS = None
    assert 1 <= LLMBatchClient().max_workers <= 32


def test_the_thread_pool_is_reused_across_batches(llm_env):
    llm_env()
    client = LLMBatchClient(max_workers=3)
    client.generate_batch(make_prompts(3))
    pool = shared_executor(3)

    client.generate_batch(make_prompts(3))

    assert shared_executor(3) is pool and LLMBatchClient(max_workers=3).max_workers == 3


def test_an_open_breaker_fails_fast_without_http(llm_env):
    fake = llm_env(LLM_CIRCUIT_BREAKER_THRESHOLD=2, LLM_CIRCUIT_BREAKER_TIMEOUT=60)
    client = LLMBatchClient(max_workers=1)
    client.generate_batch(make_prompts(2, {0: "503", 1: "503"}))
    before = fake.stats()["total"]

    results = client.generate_batch_detailed(make_prompts(3))

    assert [r.error_kind for r in results] == ["circuit_open"] * 3
    assert all(r.retryable and "openai_api" in r.error_message for r in results)
    assert fake.stats()["total"] == before == 2


def test_input_errors_do_not_open_the_breaker(llm_env):
    llm_env(LLM_CIRCUIT_BREAKER_THRESHOLD=2)
    client = LLMBatchClient(max_workers=1)
    client.generate_batch(make_prompts(4, {0: "400", 1: "401", 2: "404", 3: "safety"}))

    assert client.generate_batch(["still open?"]) == ["Reply to: still open?"]


def test_submit_runs_one_prompt_on_the_warm_pool_and_checks_it_first(llm_env, fake_llm):
    client = LLMBatchClient(max_workers=4)
    futures = [client.submit(f"prompt {i}", system_prompt=f"you are bot {i}") for i in range(3)]
    results = [future.result(timeout=30) for future in futures]
    assert [r.ok for r in results] == [True, True, True]
    assert [r.text for r in results] == [r.text for r in client.generate_batch_detailed(
        [f"prompt {i}" for i in range(3)])]
    with pytest.raises(ValueError, match="empty"):
        client.submit("   ")


def test_the_first_prompts_go_out_before_the_last_is_filtered(llm_env, monkeypatch):
    # Filtering 1,000 chat prompts took a third of a second on the calling thread while every
    # pool thread waited: the whole batch started that much late (bench "hotpath", long tails).
    from batchgen.llm import client
    from batchgen.llm.providers.base import Provider

    llm_env()
    events: list[str] = []
    filter_content, complete = client.filter_content, Provider.complete

    def filtering(text: str) -> str:
        events.append("filter")
        return filter_content(text)

    def sending(self, request, secret):
        events.append("send")
        return complete(self, request, secret)

    monkeypatch.setattr(client, "filter_content", filtering)
    monkeypatch.setattr(Provider, "complete", sending)
    prompts = make_prompts(40)

    results = LLMBatchClient(max_workers=2).generate_many_detailed(prompts)

    assert all(result.ok for result in results)
    assert events.index("send") < len(events) - 1 - events[::-1].index("filter")
