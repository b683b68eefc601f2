"""The public API kept from the "LLM Batch Generation Guide" this project implements, with its
names and signatures, so code written against that guide runs unchanged (docs/compat.md):

    from batchgen.llm import LLMClient, LLMBatchClient, generate_batch, MAX_BATCH_SIZE
    LLMBatchClient(max_workers=10).generate_batch(prompts, temperature=0.7, max_tokens=220,
                                                  system_prompt=None, top_p=0.95,
                                                  frequency_penalty=0.4, preserve_order=True)
    LLMBatchClient().generate_with_fallback(prompts, temperature=0.7, retry_failed=True)
    LLMClient().generate(user_prompt, system_prompt=None, temperature=0.7, max_tokens=220)
    get_circuit_breaker_stats("openai_api"); get_circuit_breaker("groq_api").get_state()

The project's own richer calls (``generate_batch_detailed``, ``submit``,
``generate_detailed``) live beside them on the same classes.
"""

from __future__ import annotations

from batchgen.core.sizes import MAX_BATCH_SIZE
from batchgen.llm.batch import LLMBatchClient, generate_batch
from batchgen.llm.client import LLMClient
from batchgen.state.breakers import get_circuit_breaker, get_circuit_breaker_stats

__all__ = [
    "MAX_BATCH_SIZE",
    "LLMBatchClient",
    "LLMClient",
    "generate_batch",
    "get_circuit_breaker",
    "get_circuit_breaker_stats",
]
