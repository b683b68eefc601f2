"""A running run follows the batch settings: batch mode and batch size apply at its next
refill, not its next start. The check is one small query (the Setting rows' latest
``updated_at``) at most every ``CHECK_EVERY_S`` seconds."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Max

from batchgen.llm import config as llm_config
from batchgen.models import BatchRun, BatchSettings, Setting

log = logging.getLogger(__name__)
Mode = BatchRun.Mode
CHECK_EVERY_S = 1.0


@dataclass
class _Seen:
    version: datetime | None
    next_check: float


_seen: weakref.WeakKeyDictionary[Any, _Seen] = weakref.WeakKeyDictionary()


def in_flight_for(mode: str, batch_size: int) -> int:
    """Prompts a run keeps in flight: ``batch_size`` in batch mode (BATCH_MAX_WORKERS, when
    set, caps the threads), one in single mode."""
    if mode == Mode.SINGLE:
        return 1
    cap = getattr(settings, "BATCH_MAX_WORKERS", None)
    return min(batch_size, int(cap)) if cap else batch_size


def in_flight_reason(batch_size: int) -> str:
    """Why batch mode keeps fewer than ``batch_size`` prompts in flight ("" when it does
    not), e.g. "batch size 25 → 10 in flight: BATCH_MAX_WORKERS"."""
    target = in_flight_for(Mode.BATCH, batch_size)
    if target >= batch_size:
        return ""
    return f"batch size {batch_size} → {target} in flight: BATCH_MAX_WORKERS"


def settings_version() -> datetime | None:
    """Changes whenever a Setting row is saved (admin, toggle, batchsettings)."""
    return Setting.objects.aggregate(latest=Max("updated_at"))["latest"]


def wanted(current: BatchSettings) -> tuple[str, int]:
    """The mode and in-flight count the settings ask of a refilling run."""
    if current.batch_mode_enabled and current.batch_size > 1:
        return Mode.BATCH, in_flight_for(Mode.BATCH, current.batch_size)
    return Mode.SINGLE, 1


def follow(drain: Any, submitter: Callable[[BatchRun], Callable]) -> bool:
    """Called at each refill of ``drain``: when the settings changed since it last looked,
    its mode, in-flight target and submitter follow them. True when it changed."""
    if not drain.refills:  # multi-bot runs take a fixed set of items: nothing to follow
        return False
    now = drain._clock()
    seen = _seen.get(drain)
    if seen is None:
        # The run was opened from the settings as they were then, which may be just before
        # a change (the tick read them, the admin saved): compare once now, from this version.
        _seen[drain] = _Seen(settings_version(), now + CHECK_EVERY_S)
        return apply(drain, Setting.load(), submitter)
    if now < seen.next_check:
        return False
    seen.next_check = now + CHECK_EVERY_S
    version = settings_version()
    if version == seen.version:
        return False
    seen.version = version
    return apply(drain, Setting.load(), submitter)


def apply(drain: Any, current: BatchSettings, submitter: Callable[[BatchRun], Callable]) -> bool:
    llm_config.set_paused(current.paused_providers)  # the failover chain skips them
    run: BatchRun = drain.run
    mode, target = wanted(current)
    if mode == run.mode and target == drain.target:
        return False
    log.info("run %s follows the settings: %s, %d in flight (was %s, %d)", run.id, mode,
             target, run.mode, drain.target)
    # The run records what it does from now on (the history's mode and in-flight columns).
    run.mode, run.workers = mode, target
    BatchRun.objects.filter(id=run.id).update(mode=run.mode, workers=run.workers)
    # Prompts already in flight finish on the old submitter; new ones use the new one.
    drain._submit = submitter(BatchRun(id=run.id, mode=mode, workers=target))
    drain.target, drain.prefetch = target, max(1, target // 4)
    return True
