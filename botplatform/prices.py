"""The LLM price table in USD per million tokens: built-in defaults, overridden from a JSON file
and then from JSON in the environment, so a new model or a price change needs no code change
(entry formats: docs/design.md, "The price table")."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

_FIELDS = ("input", "cached_input", "output", "batch_input", "batch_cached_input",
           "batch_output")
_HALF = Decimal("0.5")


@dataclass(frozen=True)
class Price:
    """USD per million tokens, for one model."""

    input: Decimal
    cached_input: Decimal
    output: Decimal
    batch_input: Decimal
    batch_cached_input: Decimal
    batch_output: Decimal


def load_prices(defaults: Mapping[str, Any], file_path: str = "",
                json_text: str = "") -> dict[str, Price]:
    """``defaults``, then the entries of the file at ``file_path``, then those of
    ``json_text`` (each replaces a model's whole entry). Raises ImproperlyConfigured."""
    table = parse_table(defaults, "LLM_PRICES")
    if file_path:
        try:
            text = Path(file_path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ImproperlyConfigured(
                f"LLM_PRICES_FILE={file_path!r} cannot be read: {exc.strerror}") from None
        table.update(parse_table(_json(text, "LLM_PRICES_FILE"), "LLM_PRICES_FILE"))
    if json_text:
        table.update(parse_table(_json(json_text, "LLM_PRICES_JSON"), "LLM_PRICES_JSON"))
    return table


def parse_table(raw: Any, source: str) -> dict[str, Price]:
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"{source} must be a JSON object of model -> prices")
    return {str(model): _price(entry, f"{source}[{model!r}]") for model, entry in raw.items()}


def _json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"{source} is not valid JSON: {exc}") from None


def _price(entry: Any, where: str) -> Price:
    if isinstance(entry, Price):
        return entry
    if isinstance(entry, list | tuple):
        if len(entry) != 3:
            raise ImproperlyConfigured(
                f"{where} must be [input, cached_input, output], got {len(entry)} values")
        entry = dict(zip(("input", "cached_input", "output"), entry, strict=True))
    if not isinstance(entry, Mapping):
        raise ImproperlyConfigured(f"{where} must be a list of 3 prices or an object")
    unknown = set(entry) - set(_FIELDS)
    if unknown:
        raise ImproperlyConfigured(f"{where} has unknown fields {sorted(unknown)}; "
                                   f"known: {', '.join(_FIELDS)}")
    for required in ("input", "output"):
        if required not in entry:
            raise ImproperlyConfigured(f"{where} needs {required!r}")
    values = {name: _amount(entry[name], f"{where}.{name}") for name in entry}
    values.setdefault("cached_input", values["input"])
    for name in ("input", "cached_input", "output"):
        values.setdefault(f"batch_{name}", values[name] * _HALF)
    return Price(**values)


def _amount(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ImproperlyConfigured(f"{where}={value!r} is not a number")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ImproperlyConfigured(f"{where}={value!r} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise ImproperlyConfigured(f"{where}={value!r} must be a finite number >= 0")
    return amount
