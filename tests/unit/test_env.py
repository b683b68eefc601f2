"""The environment helpers refuse bad values, naming the variable and the rule."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from botplatform.env import LARGEST, env_bool, env_choice, env_float, env_int, env_url


def refusal(monkeypatch: pytest.MonkeyPatch, reader, name: str, value: str, **rules) -> str:
    monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured) as caught:
        reader(name, 1, **rules)
    message = str(caught.value)
    assert name in message
    return message


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400"])
def test_a_number_that_is_not_finite_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                 value: str) -> None:
    message = refusal(monkeypatch, env_float, "OPENAI_TIMEOUT", value, minimum=0.1)

    assert "is not a finite number" in message


def test_a_huge_integer_is_refused_before_it_overflows_a_date(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = refusal(monkeypatch, env_int, "BATCH_LEASE_SECONDS", "99999999999", minimum=10)

    assert f"above the maximum of {LARGEST}" in message


def test_a_huge_float_is_refused_even_without_a_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refusal(monkeypatch, env_float, "BATCH_RETRY_BACKOFF_SECONDS", "1e15")

    assert f"above the maximum of {LARGEST}" in message


def test_an_explicit_maximum_names_its_own_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refusal(monkeypatch, env_float, "TELEGRAM_TIMEOUT", "301", maximum=300)

    assert message == "TELEGRAM_TIMEOUT=301.0 is above the maximum of 300"


def test_in_range_values_and_blanks_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("A_NUMBER", " 2.5 ")
    monkeypatch.setenv("A_COUNT", "7")
    monkeypatch.setenv("A_BLANK", "  ")

    assert env_float("A_NUMBER", 1.0, minimum=0.0, maximum=3.0) == 2.5
    assert env_int("A_COUNT", None, minimum=1) == 7
    assert env_int("A_BLANK", None) is None
    assert env_float("A_BLANK", 4.0) == 4.0


@pytest.mark.parametrize(("reader", "value", "rule"), [
    (env_int, "1.5", "is not an integer"),
    (env_int, "-3", "is below the minimum of 0"),
    (env_float, "soon", "is not a number"),
])
def test_malformed_numbers_say_what_is_wrong(monkeypatch: pytest.MonkeyPatch, reader,
                                             value: str, rule: str) -> None:
    assert rule in refusal(monkeypatch, reader, "SOME_SETTING", value, minimum=0)


def test_choices_booleans_and_urls_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("A_CHOICE", "Blue")
    monkeypatch.setenv("A_FLAG", "maybe")
    monkeypatch.setenv("A_URL", "ftp://x")

    with pytest.raises(ImproperlyConfigured, match="A_CHOICE='blue' is not one of: red, green"):
        env_choice("A_CHOICE", "red", ["red", "green"])
    with pytest.raises(ImproperlyConfigured, match="A_FLAG='maybe' is not a boolean"):
        env_bool("A_FLAG", False)
    with pytest.raises(ImproperlyConfigured, match="A_URL='ftp://x' must be an http"):
        env_url("A_URL", "http://localhost")
