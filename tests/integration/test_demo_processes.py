"""`make demo` as a user runs it: a real process tree, stopped by SIGTERM, on a chosen port."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.demo_support import READY, LiveDemo, demo_env
from tests.processes import ROOT, wait_for

sys.path.insert(0, str(ROOT / "scripts"))
import demo  # noqa: E402


def second_shell_env(log: Path) -> dict[str, str]:
    """The environment the demo printed for a second shell, as a user would paste it."""
    line = re.search(r"^  export (.+)$", log.read_text(), re.M).group(1)
    return {**demo_env(), **dict(part.split("=", 1) for part in shlex.split(line))}


def latest_batch(env: dict[str, str]) -> tuple[str, int]:
    """The newest run's mode and prompts in flight (batch_size; a run's item count varies)."""
    code = ("import django; django.setup(); from batchgen.models import BatchRun; "
            "r = BatchRun.objects.order_by('-id').first(); print(r.mode, r.workers)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    return out[0], int(out[1])


REQUEST_LOG = re.compile(r'"(GET|POST|HEAD) /[^"]*" \d{3}')


def command_lines(pids: list[int]) -> list[str]:
    lines = []
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # exited meanwhile
        lines.append(raw.replace(b"\0", b" ").decode(errors="replace").strip())
    return lines


# Runs on the shared live demo (listed in DEMO_TESTS) and leaves it running.
def test_the_demo_runs_telegram_poll_and_its_output_has_no_request_log(
        live_demo: LiveDemo) -> None:
    proc, log = live_demo.proc, live_demo.log
    wait_for(lambda: READY in log.read_text() or proc.poll() is not None, 240,
             "the demo to serve")
    assert proc.poll() is None, log.read_text()

    polls = [line for line in command_lines(demo.descendants(proc.pid))
             if re.search(r"manage\.py telegram_poll --loop\b", line)]
    for path in ("/healthz", "/dashboard/", "/admin/login/"):
        urllib.request.urlopen(f"{live_demo.base_url}{path}", timeout=30).read()
    web_log = Path(re.search(r"^demo: web server log: (.+)$", log.read_text(), re.M)
                   .group(1).strip())
    wait_for(lambda: "GET /healthz" in web_log.read_text(), 30, "the requests in the web log")

    assert len(polls) == 1, command_lines(demo.descendants(proc.pid))
    assert [line for line in log.read_text().splitlines() if REQUEST_LOG.search(line)] == []


def test_the_demo_compares_both_modes_on_the_same_work_and_batch_mode_is_faster(
        live_demo: LiveDemo) -> None:
    # Issue 21: the scripted table has a row for each mode on the same replies, and batch
    # mode visibly beats single mode.
    proc, log = live_demo.proc, live_demo.log
    wait_for(lambda: READY in log.read_text() or proc.poll() is not None, 240,
             "the demo to serve")
    rows = {mode: (int(sent), float(seconds)) for mode, sent, seconds in re.findall(
        r"^\s*(single|batch): \d+ batches, (\d+) messages sent in ([\d.]+) s of batch time$",
        log.read_text(), re.M)}
    assert set(rows) == {"single", "batch"}, log.read_text()
    (single_sent, single_s), (batch_sent, batch_s) = rows["single"], rows["batch"]
    assert single_sent == batch_sent > 0  # the same work in each mode
    assert batch_s < single_s / 2, rows


# It stops the session's live demo, so it runs last of tests/demo_support.py's DEMO_TESTS.
def test_the_demo_stays_alive_follows_settings_and_sigterm_stops_every_child(
        live_demo: LiveDemo) -> None:
    proc, log = live_demo.proc, live_demo.log
    try:
        wait_for(lambda: READY in log.read_text() or proc.poll() is not None, 240,
                 "the demo to serve")
        assert proc.poll() is None, log.read_text()
        shown = log.read_text()
        assert "log in as  demo / demo-botplatform" in shown
        assert 'manage.py demo fail --kind server_error' in shown
        env = second_shell_env(log)
        # A change from a second shell (the admin's toggle writes the same Setting rows)
        # shows in the live loop's next batches within seconds.
        subprocess.run([sys.executable, "manage.py", "batchsettings", "--batch-mode", "on",
                        "--batch-size", "7"], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=60)
        wait_for(lambda: latest_batch(env) == ("batch", 7), 60, "a batch run with 7 in flight")
        subprocess.run([sys.executable, "manage.py", "batchsettings", "--batch-mode", "off"],
                       cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)
        wait_for(lambda: latest_batch(env) == ("single", 1), 60, "a single-mode batch")
        tree = demo.descendants(proc.pid)
        # redis, two fakes, worker, tick loop, poll loop, feeder, web
        assert len(tree) >= 7, tree
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # Exited children may linger a moment as zombies until their new parent reaps them.
    deadline = time.monotonic() + 10
    while [pid for pid in tree if _running(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [pid for pid in tree if _running(pid)] == []


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has exited; only its exit status is left)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def test_a_port_in_use_is_refused_with_a_clear_error_and_a_non_zero_exit(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "scripts/demo.py", "--port", str(port)],
                              cwd=ROOT, env=demo_env(), capture_output=True, text=True,
                              timeout=60)
    assert done.returncode == 2
    assert f"demo: port {port} is already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_make_demo_passes_its_port_to_the_demo() -> None:
    done = subprocess.run(["make", "-n", "demo", "PORT=8010"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert "scripts/demo.py --port 8010" in done.stdout
