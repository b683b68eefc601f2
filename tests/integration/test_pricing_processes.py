"""The price table: overridable without a code change, cached tokens at the cached rate,
the batch route at the batch rate, and "no cost" (never 0) for a model it lacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.integration.test_settings import ROOT, start_up


def test_an_unreadable_price_file_stops_start_up_naming_the_variable(tmp_path) -> None:
    result = start_up(LLM_PRICES_FILE=str(tmp_path / "missing.json"))
    assert result.returncode != 0
    assert "LLM_PRICES_FILE=" in result.stderr and "cannot be read" in result.stderr


def test_a_price_file_and_json_reach_the_settings_at_start_up(tmp_path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"my-model": [7, 1, 9]}))
    env = {**os.environ, "LLM_PRICES_FILE": str(path), "LLM_PRICES_JSON": '{"gpt-4o": [1, 1, 1]}',
           "DJANGO_SETTINGS_MODULE": "botplatform.settings"}
    out = subprocess.run([sys.executable, "-c", "import django; django.setup(); "
                          "from django.conf import settings as s; "
                          "print(s.LLM_PRICES['my-model'].output, s.LLM_PRICES['gpt-4o'].output, "
                          "s.LLM_PRICES['gpt-4o-mini'].input)"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["9", "1", "0.15"], out.stderr
