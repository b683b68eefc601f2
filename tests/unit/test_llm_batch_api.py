"""The providers' Batch APIs over the real SDKs against the fake: submit, poll, fetch, cancel."""

from __future__ import annotations

from typing import Any

import pytest

from batchgen.llm import batch_api
from batchgen.llm.types import CompletionRequest

PROVIDERS = ["openai", "groq", "gemini"]


def batches(fake: Any, **changes: object) -> dict:
    return fake._post("/_batches", changes)


@pytest.fixture(name="fake")
def fake_fixture(llm_env: Any) -> Any:
    fake = llm_env()
    batches(fake, turnaround=0.0, duplicate_lines=False, end_as="completed", partial_share=0.5)
    return fake


def requests(*prompts: str) -> dict[str, CompletionRequest]:
    return {str(i + 1): CompletionRequest(user_prompt=p, system_prompt="be brief")
            for i, p in enumerate(prompts)}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_batch_round_trip_returns_each_reply_under_its_custom_id(fake, llm_env,
                                                                   provider) -> None:
    llm_env(provider)
    batch_id = batch_api.submit(provider, requests("first question", "second question"))
    assert batch_api.poll(provider, batch_id).state == batch_api.COMPLETED
    found = batch_api.results(provider, batch_id)
    assert found["1"].text == "Reply to: first question"
    assert found["2"].text == "Reply to: second question"
    assert found["1"].prompt_tokens > 0 and found["1"].provider == provider


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_batch_still_running_says_so_and_has_no_results(fake, llm_env, provider) -> None:
    llm_env(provider)
    batches(fake, turnaround=3600.0)
    batch_id = batch_api.submit(provider, requests("later"))
    assert batch_api.poll(provider, batch_id).state == batch_api.RUNNING
    assert batch_api.results(provider, batch_id) == {}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_failed_request_comes_back_as_a_retryable_failure_for_its_item_only(
        fake, llm_env, provider) -> None:
    llm_env(provider)
    batch_id = batch_api.submit(provider, requests("fine", "broken [[fault:500]]"))
    found = batch_api.results(provider, batch_id)
    assert found["1"].ok
    assert not found["2"].ok and found["2"].retryable and "500" in found["2"].error_message


def test_a_result_delivered_twice_is_returned_once(fake) -> None:
    batches(fake, duplicate_lines=True)
    batch_id = batch_api.submit("openai", requests("one", "two"))
    assert sorted(batch_api.results("openai", batch_id)) == ["1", "2"]


def test_an_expired_batch_ends_with_the_results_it_finished(fake) -> None:
    batches(fake, end_as="expired", partial_share=0.5)
    batch_id = batch_api.submit("openai", requests("a", "b", "c", "d"))
    state = batch_api.poll("openai", batch_id)
    assert (state.state, state.provider_status) == (batch_api.ENDED, "expired")
    assert sorted(batch_api.results("openai", batch_id)) == ["1", "2"]


@pytest.mark.parametrize(("provider", "cancelled"), [
    ("openai", "cancelled"), ("groq", "cancelled"), ("gemini", "JOB_STATE_CANCELLED")])
def test_a_cancelled_batch_ends_and_keeps_nothing_unfinished(fake, llm_env, provider,
                                                             cancelled) -> None:
    llm_env(provider)
    batches(fake, turnaround=3600.0)
    batch_id = batch_api.submit(provider, requests("a"))
    batch_api.cancel(provider, batch_id)
    state = batch_api.poll(provider, batch_id)
    assert (state.state, state.provider_status) == (batch_api.ENDED, cancelled)
    assert batch_api.results(provider, batch_id) == {}


def test_a_provider_without_a_batch_route_is_refused_by_name(fake) -> None:
    with pytest.raises(ValueError, match="mistral"):
        batch_api.submit("mistral", requests("x"))
