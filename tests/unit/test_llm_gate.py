"""batchgen.llm.gate: breakers, key choice and the rate budget in the one script before a
request, and the one round trip after it."""

from __future__ import annotations

import socket
import time

import pytest

from batchgen import metrics
from batchgen.llm import LLMClient, attempts, keys, registry
from batchgen.llm.limits.budgets import key_fingerprint
from batchgen.state import shared
from batchgen.state.breakers import get_circuit_breaker

KEYS = ["sk-first-key-AAAA-SECRET", "sk-second-key-BBBB-SECRET"]


def limiter_keys(key: str) -> list[str]:
    """rpm TAT, tpm TAT, blocked-until, stats of the budget ``key`` spends."""
    provider = registry.get_provider("openai")
    return attempts._limiter(provider, keys.ApiKey("openai", key, key_fingerprint(key)),
                             refresh=False).redis_keys


def learned_hash() -> str:
    return shared.key("ratelimit", "learned", f"openai:{registry.get_provider('openai').model}")


def test_a_limit_another_worker_learned_is_booked_at_by_the_next_request(llm_env,
                                                                          redis_client):
    llm_env("openai")
    assert LLMClient().generate("no limit known yet")
    rpm_tat = limiter_keys(registry.get_provider("openai").config.api_key)[0]
    assert not redis_client.exists(rpm_tat)  # no request limit: nothing booked on it

    redis_client.hset(learned_hash(), "advertised_rpm", "600")  # another worker's lesson
    assert LLMClient().generate("the limit is known now")

    assert redis_client.exists(rpm_tat)


def test_a_request_without_a_slot_takes_no_probe_from_a_half_open_breaker(llm_env,
                                                                           redis_client):
    fake = llm_env("openai", LLM_RPM_LIMIT=600, LLM_RATE_LIMIT_MAX_WAIT=1)
    assert LLMClient().generate("book the budget once")
    circuit = get_circuit_breaker("openai_api").redis_key
    redis_client.hset(circuit, mapping={"state": "open", "opened_at": time.time() - 10_000,
                                        "failures": 5})
    blocked = limiter_keys(registry.get_provider("openai").config.api_key)[2]
    redis_client.set(blocked, f"{time.time() + 600:.6f}")  # a 429 paused every worker
    before = fake.stats()["requests"]["openai"]

    result = LLMClient().generate_detailed("no slot for me")

    assert (result.error_kind, result.retry_after_s > 500) == ("rate_limit_wait", True)
    state = {k.decode(): v.decode() for k, v in redis_client.hgetall(circuit).items()}
    assert state["state"] == "open" and "probe" not in state
    assert fake.stats()["requests"]["openai"] == before


def test_after_the_cooldown_the_request_that_goes_is_the_probe_and_closes_it(llm_env,
                                                                             redis_client):
    llm_env("openai")
    circuit = get_circuit_breaker("openai_api").redis_key
    redis_client.hset(circuit, mapping={"state": "open", "opened_at": time.time() - 10_000,
                                        "failures": 5})

    assert LLMClient().generate("probe")

    assert redis_client.hget(circuit, "state") == b"closed"
    assert redis_client.hget(circuit, "failures") == b"0"


def test_a_key_another_worker_took_out_of_rotation_is_skipped_at_once(llm_env, redis_client):
    fake = llm_env("openai", OPENAI_API_KEYS=list(KEYS), OPENAI_API_KEY="")
    assert LLMClient().generate("both keys in rotation")  # this process read the flags
    ring = keys.get_ring("openai", tuple(KEYS))
    redis_client.set(ring.flag(ring.keys[0]), "401", px=60_000)
    fake.reset()

    results = [LLMClient().generate_detailed(f"prompt {i}") for i in range(4)]

    assert all(result.ok for result in results)
    assert {result.key for result in results} == {key_fingerprint(KEYS[1])}
    assert key_fingerprint(KEYS[0]) in ring.disabled()


def test_outcomes_are_recorded_after_the_server_lost_its_scripts(llm_env, redis_client):
    llm_env("openai")
    assert LLMClient().generate("scripts loaded")
    circuit = get_circuit_breaker("openai_api").redis_key
    redis_client.hset(circuit, mapping={"state": "closed", "failures": 3})
    redis_client.script_flush()

    assert LLMClient().generate("scripts lost")

    assert redis_client.hget(circuit, "failures") == b"0"  # the success script ran


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_without_redis_requests_go_through_and_the_breaker_opens_in_memory(llm_env, settings):
    llm_env("openai", LLM_CIRCUIT_BREAKER_THRESHOLD=2)
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    shared.reset()

    assert LLMClient().generate("Redis is away")
    failed = [LLMClient().generate_detailed("[[fault:500]]").error_kind for _ in range(2)]
    refused = LLMClient().generate_detailed("the breaker is open here")

    assert failed == ["server_error", "server_error"]
    assert refused.error_kind == "circuit_open"
    assert get_circuit_breaker("openai_api").get_state()["backend"] == "memory"


def test_a_batched_block_flushes_while_it_runs(redis_url, monkeypatch, redis_client):
    monkeypatch.setattr(metrics, "FLUSH_SECONDS", 0.05)
    monkeypatch.setattr(metrics, "_pending", metrics._Pending())
    key = metrics.SPECS["telegram_sends_total"].key

    with metrics.batched():
        metrics.observe_send("sent")
        metrics.observe_send("sent")
        for _ in range(100):  # a killed process would lose only what came after a flush
            if redis_client.hget(key, '["sent"]'):
                break
            time.sleep(0.05)
        seen_inside = redis_client.hget(key, '["sent"]')
        metrics.observe_send("sent")

    assert seen_inside == b"2"
    assert redis_client.hget(key, '["sent"]') == b"3"


@pytest.mark.parametrize("outcome", ["[[fault:500]]", "[[fault:400]]"])
def test_a_failed_request_still_makes_one_round_trip_after(llm_env, monkeypatch, outcome):
    from tests.unit.test_llm_round_trips import shape, trips

    llm_env("openai")
    LLMClient().generate(f"warm up: the outcome's script is loaded {outcome}")

    with trips(monkeypatch) as log:
        LLMClient().generate(f"fails {outcome}")

    assert shape(log) == ["redis", "http", "redis"], log


def test_after_the_cooldown_one_of_many_concurrent_requests_is_the_probe(llm_env,
                                                                         redis_client):
    from batchgen.llm import LLMBatchClient

    fake = llm_env("openai")
    fake.control(latency=0.5)
    circuit = get_circuit_breaker("openai_api").redis_key
    redis_client.hset(circuit, mapping={"state": "open", "opened_at": time.time() - 10_000,
                                        "failures": 5})

    results = LLMBatchClient(max_workers=8).generate_batch_detailed(
        [f"who probes {i}" for i in range(8)])

    assert sorted(str(r.error_kind) for r in results) == ["None"] + ["circuit_open"] * 7
    assert fake.stats()["requests"]["openai"] == {"200": 1}
    assert redis_client.hget(circuit, "state") == b"closed"


def test_a_key_put_back_by_another_process_is_used_at_once(llm_env, redis_client):
    fake = llm_env("openai", OPENAI_API_KEYS=list(KEYS), OPENAI_API_KEY="")
    fake.control(key_faults={KEYS[0]: "401"})
    for i in range(2):  # one of them meets the bad key, which goes out of rotation
        assert LLMClient().generate(f"meet the bad key {i}")
    ring = keys.get_ring("openai", tuple(KEYS))
    assert key_fingerprint(KEYS[0]) in ring.disabled()
    fake.control(key_faults={})
    redis_client.delete(ring.flag(ring.keys[0]))  # enable_keys, run by an operator elsewhere

    results = [LLMClient().generate_detailed(f"prompt {i}") for i in range(4)]

    assert {result.key for result in results} == {key_fingerprint(k) for k in KEYS}


def test_a_new_process_books_its_first_request_at_the_learned_limit(llm_env, redis_client):
    llm_env("openai")
    redis_client.hset(learned_hash(), "advertised_rpm", "600")  # learned before we started
    rpm_tat = limiter_keys(registry.get_provider("openai").config.api_key)[0]
    shared.reset()  # a fresh process: nothing read yet

    assert LLMClient().generate("my first request")

    assert redis_client.exists(rpm_tat)
