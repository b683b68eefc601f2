"""Telegram pacing shared through Redis: every worker books from one budget."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.processes import ROOT, process_env

# Two processes paced in real seconds: alone, after the parallel part.
pytestmark = pytest.mark.serial

SEND_FOUR = """
import django, sys; django.setup()
from batchgen.telegram.client import TelegramSender
with TelegramSender() as sender:
    for n in range(4):
        assert sender.send(sys.argv[1], -100555, f"{sys.argv[1][:6]} {n}").status == "sent"
"""


@pytest.mark.django_db
def test_two_worker_processes_keep_one_bot_under_20_a_minute_in_one_group_at_telegram(
        redis_url, telegram_env, settings) -> None:
    env = process_env(settings)
    token = f"100:TOKEN{'x' * 30}"  # one bot, sending from two processes
    procs = [subprocess.Popen([sys.executable, "-c", SEND_FOUR, token], cwd=ROOT, env=env)
             for _ in range(2)]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0]
    times = sorted(m["time"] for m in telegram_env.messages())
    assert len(times) == 8
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 2.9, gaps  # one every 3 s: never more than 20 in any minute
