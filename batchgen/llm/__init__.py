"""The LLM layer: providers, LLMClient, LLMBatchClient. Knows nothing of the ORM.

``MAX_BATCH_SIZE`` is ``batchgen.models.MAX_BATCH_SIZE`` (50), re-exported.
"""

from __future__ import annotations

from batchgen.llm.batch import LLMBatchClient, generate_batch
from batchgen.llm.client import LLMClient
from batchgen.llm.config import reset
from batchgen.llm.errors import ProviderError
from batchgen.llm.types import Completion, CompletionRequest, GenerationResult
from batchgen.models import MAX_BATCH_SIZE

__all__ = [
    "MAX_BATCH_SIZE",
    "Completion",
    "CompletionRequest",
    "GenerationResult",
    "LLMBatchClient",
    "LLMClient",
    "ProviderError",
    "generate_batch",
    "reset",
]
