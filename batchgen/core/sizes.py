"""The LLM layer's size limits, in a module of their own so that ``batchgen.models`` can use
them without importing the SDKs (importing ``batchgen.core.sizes`` runs no provider code)."""

from __future__ import annotations

# The most prompts one generate_batch call takes (the API this project keeps, see
# docs/compat.md). The admin's batch_size setting is bounded by it too.
MAX_BATCH_SIZE = 50


def check_batch_size(count: int) -> None:
    """ValueError naming the limit when ``count`` prompts are more than one batch may hold."""
    if count > MAX_BATCH_SIZE:
        raise ValueError(f"batch of {count} prompts exceeds the limit "
                         f"MAX_BATCH_SIZE={MAX_BATCH_SIZE}")
