"""Provider implementations: the only code that imports an LLM SDK."""

from __future__ import annotations

from batchgen.llm.providers.base import Provider

__all__ = ["Provider"]
