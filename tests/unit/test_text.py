"""batchgen.core.text.storable: what can't be stored is replaced, what real text needs is kept."""

from __future__ import annotations

import pytest

from batchgen.core.text import REPLACEMENT, storable


@pytest.mark.parametrize(("raw", "expected"), [
    ("hello \ud83d there", f"hello {REPLACEMENT} there"),   # lone surrogate: UnicodeEncodeError
    ("nul \x00 inside", f"nul {REPLACEMENT} inside"),        # PostgreSQL DataError
    ("bell \x07", f"bell {REPLACEMENT}"),
])
def test_unstorable_code_points_are_replaced_and_the_rest_kept(raw: str, expected: str) -> None:
    cleaned = storable(raw)
    assert cleaned == expected
    cleaned.encode("utf-8")


@pytest.mark.parametrize("text", [
    "👨\u200d👩\u200d👧 family",           # zero-width joiners
    "می\u200cخواهم",                       # Persian ZWNJ
    "\u200fשלום\u200e abc \u2067x\u2069",  # bidi marks and isolates
    "tabs\tnew\nlines\r\n",
])
def test_text_that_real_languages_need_is_unchanged(text: str) -> None:
    assert storable(text) == text


def test_empty_and_none_become_empty() -> None:
    assert storable(None) == "" and storable("") == ""
