"""Several API keys per provider: spread, per-key breakers, a 401 key out of rotation."""

from __future__ import annotations

import logging

import pytest

from batchgen.llm import LLMBatchClient, LLMClient, config, keys
from batchgen.llm.limits.budgets import key_fingerprint
from batchgen.state.breakers import get_circuit_breaker_stats
from tests.fakes import TEST_KEYS

KEYS = ["sk-first-key-AAAA-SECRET", "sk-second-key-BBBB-SECRET", "sk-third-key-CCCC-SECRET"]


def make_prompts(count: int) -> list[str]:
    return [f"keyed prompt {i}" for i in range(count)]


def per_key(fake, status: str = "200") -> dict[str, int]:
    """Requests the fake saw per configured key, by fingerprint."""
    seen = fake.stats()["by_key"]
    return {key: seen.get(key_fingerprint(key), {}).get(status, 0) for key in KEYS}


def with_keys(llm_env, **overrides: object):
    return llm_env("openai", **{"OPENAI_API_KEYS": list(KEYS), "OPENAI_API_KEY": "", **overrides})


def test_requests_are_spread_evenly_over_the_keys(llm_env):
    fake = with_keys(llm_env)

    results = LLMBatchClient(max_workers=6).generate_batch_detailed(make_prompts(30))

    assert all(r.ok for r in results)
    assert per_key(fake) == dict.fromkeys(KEYS, 10)
    assert {r.key for r in results} == {key_fingerprint(k) for k in KEYS}


def test_the_single_key_variable_still_works_beside_the_list(llm_env, settings):
    with_keys(llm_env, OPENAI_API_KEY=KEYS[0])
    settings.OPENAI_API_KEYS = f"{KEYS[1]}, {KEYS[0]}"

    assert config.api_keys("openai") == (KEYS[1], KEYS[0])


def test_a_401_key_is_dropped_and_the_others_carry_the_load(llm_env, caplog):
    fake = with_keys(llm_env)
    fake.control(key_faults={KEYS[1]: "401"})
    client = LLMBatchClient(max_workers=4)

    with caplog.at_level(logging.WARNING, logger="batchgen"):
        first = client.generate_batch_detailed(make_prompts(20))
    second = client.generate_batch_detailed(make_prompts(20))

    assert all(r.ok for r in first + second)
    refused = per_key(fake, "401")[KEYS[1]]
    assert 1 <= refused <= 4  # only requests already in flight when it was dropped
    assert per_key(fake)[KEYS[1]] == 0
    assert per_key(fake, "401")[KEYS[1]] == refused  # the second batch never used it
    assert key_fingerprint(KEYS[1]) in caplog.text
    assert not any(key in caplog.text for key in KEYS)


def test_a_dropped_key_is_skipped_by_every_worker(llm_env):
    fake = with_keys(llm_env)
    fake.control(key_faults={KEYS[0]: "401"})
    LLMClient().generate_detailed("first call meets the bad key")
    keys.clear()  # another process: nothing in memory, only what Redis says

    health = {row["key"]: row for row in keys.key_health()}
    results = [LLMClient().generate_detailed(p) for p in make_prompts(6)]

    assert health[key_fingerprint(KEYS[0])]["state"] == "disabled"
    assert health[key_fingerprint(KEYS[0])]["disabled_for"] > 3000
    assert all(r.ok for r in results)
    assert per_key(fake, "401")[KEYS[0]] == 1


def test_all_keys_401_ends_as_auth_without_leaking_a_key(llm_env):
    fake = with_keys(llm_env)
    fake.control(fault="401")

    first = LLMClient().generate_detailed("every key is revoked")
    later = LLMClient().generate_detailed("and nothing is sent any more")

    assert (first.error_kind, first.retryable, first.attempts) == ("auth", False, 3)
    assert later.error_kind == "auth" and "out of rotation" in later.error_message
    assert fake.stats()["total"] == 3
    assert not any(key in first.error_message + later.error_message for key in KEYS)


def test_enable_keys_puts_them_back_in_rotation(llm_env):
    fake = with_keys(llm_env)
    fake.control(fault="401")
    LLMClient().generate_detailed("revoke them all")
    fake.control(fault=None)

    assert keys.enable_keys("openai") == 3
    assert LLMClient().generate_detailed("back again").ok


def test_a_failing_key_opens_its_own_breaker_and_the_rotation_skips_it(llm_env):
    fake = with_keys(llm_env, LLM_CIRCUIT_BREAKER_THRESHOLD=2)
    fake.control(key_faults={KEYS[0]: "503"})
    client = LLMClient()

    results = [client.generate_detailed(p) for p in make_prompts(12)]

    # Turns: A fails, B, C, A fails (its breaker opens), then only B and C.
    assert [r.ok for r in results[:6]] == [False, True, True, False, True, True]
    assert all(r.ok for r in results[6:])
    assert per_key(fake, "503")[KEYS[0]] == 2
    assert get_circuit_breaker_stats(f"openai_api:{key_fingerprint(KEYS[0])}")["state"] == "open"
    assert get_circuit_breaker_stats("openai_api")["state"] == "closed"


def test_each_key_gets_its_own_sdk_client_on_one_connection_pool(llm_env):
    with_keys(llm_env)
    client = LLMClient()
    for prompt in make_prompts(3):
        client.generate_detailed(prompt)

    sdk_clients = list(client.provider._clients.values())
    assert len(sdk_clients) == 3
    assert len({id(c._client) for c in sdk_clients}) == 1  # the shared httpx client


@pytest.mark.parametrize("provider", ["groq", "gemini"])
def test_other_providers_rotate_their_keys_too(llm_env, provider):
    variable = f"{provider.upper()}_API_KEYS"
    fake = llm_env(provider, **{variable: list(KEYS), f"{provider.upper()}_API_KEY": ""})

    results = LLMBatchClient(max_workers=3).generate_batch_detailed(make_prompts(9))

    assert all(r.ok for r in results)
    assert per_key(fake) == dict.fromkeys(KEYS, 3)
    assert TEST_KEYS[provider] not in config.api_keys(provider)


def test_the_dashboard_lists_each_key_by_fingerprint_with_its_limiter(llm_env):
    from batchgen.dashboard import queries

    # Keys of different organisations: each has a budget (and limiter counters) of its own.
    fake = with_keys(llm_env, OPENAI_RPM_LIMIT=600, OPENAI_RATE_LIMIT_SCOPE="key")
    fake.control(key_faults={KEYS[2]: "401"})
    for prompt in make_prompts(4):
        LLMClient().generate_detailed(prompt)

    rows = {row["key"]: row for row in queries.key_states() if row["provider"] == "openai"}

    assert {fp: row["state"] for fp, row in rows.items()} == {
        key_fingerprint(KEYS[0]): "active", key_fingerprint(KEYS[1]): "active",
        key_fingerprint(KEYS[2]): "disabled"}
    assert rows[key_fingerprint(KEYS[0])]["limited"] and rows[key_fingerprint(KEYS[0])]["acquired"]
    assert not any(key in repr(rows) for key in KEYS)


def test_a_saturated_key_hands_the_request_to_one_with_room(llm_env):
    with_keys(llm_env, OPENAI_API_KEYS=KEYS[:2], OPENAI_RPM_LIMIT=180,
              LLM_RATE_LIMIT_MAX_WAIT=0.0, OPENAI_RATE_LIMIT_SCOPE="key")
    client = LLMClient()

    results = [client.generate_detailed(p) for p in make_prompts(8)]

    # Each key's limiter allows a burst of 3 (one second of 180 RPM); the rotation uses both
    # before refusing.
    assert [r.error_kind for r in results] == [None] * 6 + ["rate_limit_wait"] * 2


def test_keys_of_one_account_share_its_budget_so_rotation_gains_nothing(llm_env):
    with_keys(llm_env, OPENAI_API_KEYS=KEYS[:2], OPENAI_RPM_LIMIT=180,
              LLM_RATE_LIMIT_MAX_WAIT=0.0)
    client = LLMClient()

    results = [client.generate_detailed(p) for p in make_prompts(8)]

    # One budget of 180 RPM for both keys: its burst of 3, then no key has room.
    assert [r.error_kind for r in results] == [None] * 3 + ["rate_limit_wait"] * 5
