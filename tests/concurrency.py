"""Run one function in several threads at the same moment, as concurrent processes would."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from django.db import connection

T = TypeVar("T")


def at_once(work: Callable[[], T], count: int, timeout: float = 120.0) -> list[T]:
    """``work()`` in ``count`` threads released together; their results. A thread's error is
    raised here (a failed thread must fail the test), and each thread closes its connection."""
    barrier, results, errors = threading.Barrier(count), [], []

    def run() -> None:
        try:
            barrier.wait(timeout=30)
            results.append(work())
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    if errors:
        raise errors[0]
    return results
