"""Text from outside (LLM replies, provider error messages, Telegram updates) made storable.

Models do return JSON such as ``"hello \\ud83d there"``: valid JSON, but a lone surrogate
cannot be encoded as UTF-8, so saving or sending it raises. PostgreSQL refuses NUL in text
columns. Both are replaced by U+FFFD before the text reaches the database or Telegram.
Zero-width joiners (👨‍👩‍👧), ZWNJ (Persian) and bidi marks are real text and are kept.
"""

from __future__ import annotations

import re

__all__ = ["REPLACEMENT", "storable"]

REPLACEMENT = "\ufffd"
# NUL and the other C0 controls except tab, newline and carriage return; lone surrogates.
_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def storable(text: str | None) -> str:
    """``text`` with every code point that cannot be stored or sent replaced by U+FFFD."""
    if not text:
        return ""
    return _UNSTORABLE.sub(REPLACEMENT, text)
