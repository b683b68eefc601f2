"""How the long-running commands (``tick --loop``, ``telegram_poll --loop``) stop."""

from __future__ import annotations

import signal
import threading


def stop_on_signals(enabled: bool = True) -> threading.Event:
    """An event that SIGTERM and SIGINT set (when ``enabled``): the loop finishes the round in
    progress, then stops between rounds, so no claim or update is left half done."""
    stop = threading.Event()
    if enabled:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    return stop
