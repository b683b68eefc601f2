"""The public API kept from the "LLM Batch Generation Guide" this project implements, with its
names and signatures, so code written against that guide runs unchanged (the calls are listed
in docs/compat.md). The project's own richer calls (``generate_batch_detailed``, ``submit``,
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
