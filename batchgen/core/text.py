"""Text from outside (LLM replies, provider errors, Telegram updates) made storable: lone
surrogates and NUL become U+FFFD, real text such as joiners and bidi marks is kept
(docs/design.md, "Storable text")."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REPLACEMENT", "field_with_nul", "storable"]

REPLACEMENT = "\ufffd"
# NUL and the other C0 controls except tab, newline and carriage return; lone surrogates.
_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def field_with_nul(params: Any) -> str | None:
    """The first name in ``params`` (a QueryDict: a query string, a form) whose name or a
    value holds a NUL, which PostgreSQL refuses in any text parameter; None when none does."""
    for name, values in params.lists():
        if "\0" in name or any("\0" in value for value in values):
            return name
    return None


def storable(text: str | None) -> str:
    """``text`` with every code point that cannot be stored or sent replaced by U+FFFD."""
    if not text:
        return ""
    return _UNSTORABLE.sub(REPLACEMENT, text)
