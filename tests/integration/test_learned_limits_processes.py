"""Budgets scoped as the providers count them, limits learned from replies (real Redis)."""

from __future__ import annotations

import multiprocessing

from batchgen.llm.limits.learned import Learner
from batchgen.state import shared

# The same budget and the same fresh state as the unit tests.
from tests.unit.test_learned_limits import BUDGET, advertised, fresh  # noqa: E402,F401,I001


def _learn_in_child(rpm: int) -> None:
    shared.reset()
    Learner(BUDGET).observe(advertised(rpm), 200)


def test_a_limit_learned_in_one_process_applies_in_another():
    context = multiprocessing.get_context("fork")
    child = context.Process(target=_learn_in_child, args=(240,))
    child.start()
    child.join(timeout=30)

    assert child.exitcode == 0
    assert Learner(BUDGET).limits().rpm == 240
