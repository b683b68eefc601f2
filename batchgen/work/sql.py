"""The PostgreSQL-only statements' one shared piece: a typed VALUES list, so that many rows are
updated or upserted in one statement, each with its own values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def typed_values(rows: Sequence[Sequence[Any]], types: Sequence[str]) -> tuple[str, list[Any]]:
    """``VALUES`` rows for ``rows`` (each column cast to its PostgreSQL type in ``types``) and
    their parameters, in order."""
    row = "(" + ", ".join(f"%s::{name}" for name in types) + ")"
    return ", ".join([row] * len(rows)), [value for values in rows for value in values]
