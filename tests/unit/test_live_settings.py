"""A running run follows batch mode and batch size from its next refill (issue 23)."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from batchgen.delivery import drain, live_settings
from batchgen.delivery.runs import open_run
from batchgen.models import BatchRun
from tests.factories import make_item, set_batch_mode

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(name="pending_submits")
def pending_submits_fixture(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Prompts are submitted to a provider that never answers: what is in flight stays."""
    modes: list[str] = []

    def submitter(run: BatchRun):
        modes.append(run.mode)
        return lambda work: Future()

    monkeypatch.setattr(drain, "_submitter", submitter)
    return modes


def test_switching_batch_mode_on_applies_at_the_next_refill(settings, pending_submits) -> None:
    settings.BATCH_MAX_WORKERS = None
    set_batch_mode(5, enabled=False)
    for _ in range(8):
        make_item()
    run = open_run()
    clock = Clock()
    work = drain.Drain(run, delivery=None, clock=clock)
    work._refill()
    assert (run.mode, len(work._in_flight)) == (BatchRun.Mode.SINGLE, 1)

    set_batch_mode(5, enabled=True)
    clock.now += live_settings.CHECK_EVERY_S
    work._refill()

    assert len(work._in_flight) == 5
    assert BatchRun.objects.filter(id=run.id, mode="batch", workers=5).exists()
    assert pending_submits == ["single", "batch"]


def test_a_smaller_batch_size_applies_at_the_next_refill(settings, pending_submits) -> None:
    settings.BATCH_MAX_WORKERS = None
    set_batch_mode(6)
    run = open_run()
    clock = Clock()
    work = drain.Drain(run, delivery=None, clock=clock)
    work._refill()

    set_batch_mode(2)
    clock.now += live_settings.CHECK_EVERY_S
    work._refill()

    assert work.target == 2


def test_settings_are_not_read_again_within_a_second(settings, pending_submits,
                                                      django_assert_num_queries) -> None:
    set_batch_mode(4)
    run = open_run()
    clock = Clock()
    work = drain.Drain(run, delivery=None, clock=clock)
    live_settings.follow(work, drain._submitter)
    clock.now += live_settings.CHECK_EVERY_S / 2

    with django_assert_num_queries(0):
        assert live_settings.follow(work, drain._submitter) is False


def test_batch_max_workers_caps_the_batch_size_and_says_so(settings) -> None:
    settings.BATCH_MAX_WORKERS = 10

    assert live_settings.in_flight_for(BatchRun.Mode.BATCH, 25) == 10
    assert live_settings.in_flight_reason(25) == (
        "batch size 25 → 10 in flight: BATCH_MAX_WORKERS")
    assert live_settings.in_flight_reason(8) == ""


def test_a_run_opened_just_before_a_change_follows_it_at_its_first_refill(
        settings, pending_submits) -> None:
    # The tick read the settings, then the admin saved batch size 3, then the run started:
    # the change came before the run's first look, so it was not "since" anything.
    settings.BATCH_MAX_WORKERS = None
    set_batch_mode(10)
    for _ in range(4):
        make_item()
    run = open_run()
    set_batch_mode(3)

    work = drain.Drain(run, delivery=None, clock=Clock())
    work._refill()

    assert work.target == 3
    assert BatchRun.objects.filter(id=run.id, mode="batch", workers=3).exists()
