"""batchgen.llm.compat: the kept public API, importable from batchgen.llm, unchanged."""

from __future__ import annotations

import inspect

from batchgen import llm
from batchgen.llm import compat


def test_the_kept_names_are_importable_from_batchgen_llm() -> None:
    for name in compat.__all__:
        assert getattr(llm, name) is getattr(compat, name)
    assert llm.MAX_BATCH_SIZE == 50


def test_the_kept_signatures_are_unchanged() -> None:
    batch = inspect.signature(compat.LLMBatchClient.generate_batch)
    assert list(batch.parameters) == ["self", "prompts", "temperature", "max_tokens",
                                      "system_prompt", "top_p", "frequency_penalty",
                                      "preserve_order"]
    assert batch.parameters["temperature"].default == 0.7
    assert batch.parameters["max_tokens"].default == 220
    fallback = inspect.signature(compat.LLMBatchClient.generate_with_fallback)
    assert list(fallback.parameters)[:4] == ["self", "prompts", "temperature", "retry_failed"]
    generate = inspect.signature(compat.LLMClient.generate)
    assert list(generate.parameters)[:5] == ["self", "user_prompt", "system_prompt",
                                             "temperature", "max_tokens"]
    assert list(inspect.signature(compat.get_circuit_breaker_stats).parameters) == ["name"]


def test_the_documents_resilience_module_still_answers() -> None:
    from batchgen import resilience
    from batchgen.state import breakers

    assert resilience.get_circuit_breaker is breakers.get_circuit_breaker
    assert resilience.get_circuit_breaker_stats("openai_api")["state"] in {
        "closed", "open", "half_open"}
