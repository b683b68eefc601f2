"""The price table: overridable without a code change, cached tokens at the cached rate,
the batch route at the batch rate, and "no cost" (never 0) for a model it lacks."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured

from batchgen.core import pricing
from botplatform.prices import load_prices

DEFAULTS = {"gpt-4o-mini": (0.15, 0.075, 0.60)}


def test_cached_tokens_are_billed_at_the_cached_rate(settings) -> None:
    settings.LLM_PRICES = {"m": (1.0, 0.1, 2.0)}
    # 1,000 prompt tokens of which 800 cached, 100 completion tokens.
    assert pricing.cost("m", 1000, 800, 100) == Decimal("0.00048")
    assert pricing.full_cost("m", 1000, 800, 100) == Decimal("0.0012")


def test_the_batch_route_costs_half_unless_the_table_says_otherwise(settings) -> None:
    settings.LLM_PRICES = load_prices({"m": (1.0, 0.1, 2.0)}, json_text=json.dumps(
        {"n": {"input": 1.0, "output": 2.0, "batch_output": 1.5}}))
    assert pricing.cost("m", 1000, 0, 100, "batch") == pricing.cost("m", 1000, 0, 100) / 2
    assert pricing.cost("n", 0, 0, 1_000_000, "batch") == Decimal("1.5")


def test_a_model_missing_from_the_table_has_no_cost_not_zero(settings) -> None:
    settings.LLM_PRICES = {"m": (1.0, 0.1, 2.0)}
    assert pricing.cost("brand-new-model", 1000, 0, 100) is None
    assert pricing.cost("m", 0, 0, 0) == 0  # a known model with no usage does cost 0


def test_the_json_in_the_environment_overrides_the_file_and_the_file_the_defaults(
        tmp_path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"gpt-4o-mini": [1, 0.5, 2], "new-model": [3, 1, 4]}))
    table = load_prices(DEFAULTS, str(path), json.dumps({"new-model": {"input": 5,
                                                                       "output": 6}}))
    assert table["gpt-4o-mini"].input == 1 and table["gpt-4o-mini"].batch_input == Decimal("0.5")
    # An entry without cached_input bills cached tokens at the full input price.
    assert table["new-model"].input == 5 and table["new-model"].cached_input == 5


@pytest.mark.parametrize(("text", "rule"), [
    ("[1, 2]", "must be a JSON object"),
    ('{"m": [1, 2]}', "LLM_PRICES_JSON['m'] must be [input, cached_input, output]"),
    ('{"m": {"input": 1}}', "LLM_PRICES_JSON['m'] needs 'output'"),
    ('{"m": {"input": 1, "output": "cheap"}}', "LLM_PRICES_JSON['m'].output='cheap' is not"),
    ('{"m": {"input": -1, "output": 1}}', "must be a finite number >= 0"),
    ('{"m": {"input": 1, "output": 1, "imput": 2}}', "unknown fields ['imput']"),
    ("{nope", "LLM_PRICES_JSON is not valid JSON"),
])
def test_a_bad_override_is_refused_naming_the_model_and_the_rule(text: str, rule: str) -> None:
    with pytest.raises(ImproperlyConfigured) as raised:
        load_prices(DEFAULTS, json_text=text)
    assert rule in str(raised.value)
