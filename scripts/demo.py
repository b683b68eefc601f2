"""`make demo`: the whole pipeline, offline, on embedded defaults, then the dashboard.

Starts a private Redis (redis-server from the PATH, else fakeredis's TCP
server in this process), the fake LLM provider (~0.5 s latency) and the fake
Telegram, a real `rqworker` process; migrates SQLite, loads demo data, runs
ticks in single mode and in batch mode, prints the batches side by side, and
ends serving the admin and dashboard at http://127.0.0.1:8000.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: make the project importable

from batchgen.fakes.ports import free_port, wait_for_port  # noqa: E402  (no Django inside)

PYTHON = sys.executable
children: list[subprocess.Popen] = []






def wait_or_exit(port: int, what: str) -> None:
    if not wait_for_port(port):
        raise SystemExit(f"demo: {what} did not start on port {port}")


def start(args: list[str], env: dict, quiet: bool = True) -> subprocess.Popen:
    out = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=out)
    children.append(proc)
    return proc


def manage(env: dict, *args: str) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True)


def start_redis(env: dict, fake: bool) -> str:
    port = free_port()
    server = None if fake else shutil.which("redis-server")
    if server:
        start([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", tempfile.mkdtemp(prefix="demo-redis-")], env)
        print(f"demo: redis-server on port {port}")
    else:
        from fakeredis import TcpFakeServer

        fake = TcpFakeServer(("127.0.0.1", port), server_type="redis")
        threading.Thread(target=fake.serve_forever, daemon=True).start()
        print(f"demo: no redis-server on the PATH; fakeredis TCP server on port {port}")
    wait_or_exit(port, "Redis")
    return f"redis://127.0.0.1:{port}/0"


def demo_env() -> dict:
    llm_port, telegram_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update(
        DJANGO_SETTINGS_MODULE="botplatform.settings", DEBUG="true", DATABASE_URL="",
        LLM_PROVIDER="openai", LLM_MODEL="gpt-4o-mini", OPENAI_API_KEY="demo-key-offline",
        OPENAI_BASE_URL=f"http://127.0.0.1:{llm_port}/v1",
        TELEGRAM_API_BASE_URL=f"http://127.0.0.1:{telegram_port}",
        BATCH_RETRY_BACKOFF_SECONDS="2", BATCH_MAX_WORKERS="10", PYTHONUNBUFFERED="1",
    )
    env["_LLM_PORT"], env["_TELEGRAM_PORT"] = str(llm_port), str(telegram_port)
    return env


def run_pipeline(env: dict, single_ticks: int, batch_ticks: int, batch_size: int) -> None:
    manage(env, "batchsettings", "--batch-mode", "off")
    for _ in range(single_ticks):
        manage(env, "tick")
    manage(env, "batch_report", "--wait", "120", "--last", "0")
    manage(env, "batchsettings", "--batch-mode", "on", "--batch-size", str(batch_size))
    for _ in range(batch_ticks):
        manage(env, "tick")
    print("\nThe batches this demo ran (single mode, then batch mode):")
    manage(env, "batch_report", "--wait", "120", "--last", str(single_ticks + batch_ticks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-serve", action="store_true", help="stop after the report")
    parser.add_argument("--single-ticks", type=int, default=4)
    parser.add_argument("--batch-ticks", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--fake-redis", action="store_true",
                        help="use fakeredis even when redis-server is on the PATH")
    args = parser.parse_args()
    env = demo_env()
    try:
        env["REDIS_URL"] = start_redis(env, args.fake_redis)
        manage(env, "migrate", "--verbosity", "0")
        manage(env, "load_demo_data")
        start([PYTHON, "manage.py", "fake_llm", "--port", env["_LLM_PORT"],
               "--latency", str(args.latency), "--jitter", "0.1"], env)
        start([PYTHON, "manage.py", "fake_telegram", "--port", env["_TELEGRAM_PORT"]], env)
        wait_or_exit(int(env["_LLM_PORT"]), "the fake LLM provider")
        wait_or_exit(int(env["_TELEGRAM_PORT"]), "the fake Telegram")
        start([PYTHON, "manage.py", "rqworker", "default"], env)
        run_pipeline(env, args.single_ticks, args.batch_ticks, args.batch_size)
        if not args.no_serve:
            print("\ndemo: dashboard http://127.0.0.1:8000/dashboard/  admin "
                  "http://127.0.0.1:8000/admin/  (login demo / demo-botplatform; Ctrl-C stops)")
            server = start([PYTHON, "manage.py", "runserver", "127.0.0.1:8000", "--noreload"],
                           env, quiet=False)
            server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for proc in reversed(children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in children:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
