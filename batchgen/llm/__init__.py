"""The LLM layer: providers, LLMClient, LLMBatchClient. May import metrics, state and core;
knows nothing of the ORM. The names below are loaded on first use (PEP 562), because the
provider SDKs take seconds to import (docs/design.md, "The LLM layer"); the kept public API is
``batchgen.llm.compat`` (docs/compat.md).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "MAX_BATCH_SIZE": "batchgen.core.sizes",
    "LLMBatchClient": "batchgen.llm.compat",
    "LLMClient": "batchgen.llm.compat",
    "generate_batch": "batchgen.llm.compat",
    "get_circuit_breaker": "batchgen.llm.compat",
    "get_circuit_breaker_stats": "batchgen.llm.compat",
    "Completion": "batchgen.llm.types",
    "CompletionRequest": "batchgen.llm.types",
    "GenerationResult": "batchgen.llm.types",
    "ProviderError": "batchgen.llm.errors",
    "reset": "batchgen.llm.config",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'batchgen.llm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
