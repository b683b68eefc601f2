"""`make demo [PORT=8000]`: the whole pipeline, offline, then a live system to play with.

Starts a private Redis (redis-server from the PATH, else fakeredis's TCP server in this
process), the fake LLM provider (~0.5 s latency), the fake Telegram and a real `rqworker`;
migrates a fresh SQLite demo database, loads demo data, runs ticks in single mode and in
batch mode and prints the batches side by side. Then it stays alive: a `tick --loop`, a
`telegram_poll --loop`, a feeder that keeps the queue topped up, and the admin and dashboard
at http://127.0.0.1:PORT/ (login demo / demo-botplatform), so a change of batch mode or batch
size in the admin applies at the running run's next refill. `manage.py demo add-bot | say |
fail` drives it from a second shell. Ctrl-C or SIGTERM stops every process it started.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: make the project importable

from batchgen.fakes.ports import free_port, wait_for_port  # noqa: E402  (no Django inside)

PYTHON = sys.executable
DEMO_ITEMS = 30  # the demo data's first items: one per chat
children: dict[str, subprocess.Popen] = {}
# What a second shell needs to run `manage.py tick` (or anything) against this demo.
SHARED_ENV = ("DATABASE_URL", "REDIS_URL", "LLM_PROVIDER", "LLM_MODEL", "OPENAI_API_KEY",
              "OPENAI_BASE_URL", "TELEGRAM_API_BASE_URL", "DEBUG")


class Stop(Exception):
    """SIGTERM: leave through the same clean-up as Ctrl-C."""


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def wait_or_exit(port: int, what: str) -> None:
    if not wait_for_port(port):
        raise SystemExit(f"demo: {what} did not start on port {port}")


def start(name: str, args: list[str], env: dict, quiet: bool = True) -> subprocess.Popen:
    """A child in a session of its own: the terminal's Ctrl-C reaches only this script,
    which then stops every child in order."""
    out = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=out,
                            start_new_session=True)
    children[name] = proc
    return proc


def manage(env: dict, *args: str) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True)


def start_redis(env: dict, fake: bool) -> str:
    port = free_port()
    server = None if fake else shutil.which("redis-server")
    if server:
        start("redis", [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", tempfile.mkdtemp(prefix="demo-redis-")],
              env)
        print(f"demo: redis-server on port {port}")
    else:
        from fakeredis import TcpFakeServer

        fake_server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
        threading.Thread(target=fake_server.serve_forever, daemon=True).start()
        print(f"demo: no redis-server on the PATH; fakeredis TCP server on port {port}")
    wait_or_exit(port, "Redis")
    return f"redis://127.0.0.1:{port}/0"


def fresh_database(path: Path, keep: bool) -> str:
    """A new SQLite file each run (figures of an earlier run would mix in), unless kept."""
    if not keep:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def demo_env(database_url: str) -> dict:
    llm_port, telegram_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update(
        DJANGO_SETTINGS_MODULE="botplatform.settings", DEBUG="true", DATABASE_URL=database_url,
        LLM_PROVIDER="openai", LLM_MODEL="gpt-4o-mini", OPENAI_API_KEY="demo-key-offline",
        OPENAI_BASE_URL=f"http://127.0.0.1:{llm_port}/v1",
        TELEGRAM_API_BASE_URL=f"http://127.0.0.1:{telegram_port}",
        BATCH_RETRY_BACKOFF_SECONDS="2", BATCH_MAX_WORKERS="10", PYTHONUNBUFFERED="1",
    )
    env["_LLM_PORT"], env["_TELEGRAM_PORT"] = str(llm_port), str(telegram_port)
    return env


def start_services(env: dict, latency: float) -> None:
    start("fake LLM", [PYTHON, "manage.py", "fake_llm", "--port", env["_LLM_PORT"],
                       "--latency", str(latency), "--jitter", "0.1"], env)
    start("fake Telegram", [PYTHON, "manage.py", "fake_telegram", "--port",
                            env["_TELEGRAM_PORT"]], env)
    wait_or_exit(int(env["_LLM_PORT"]), "the fake LLM provider")
    wait_or_exit(int(env["_TELEGRAM_PORT"]), "the fake Telegram")
    start("rqworker", [PYTHON, "manage.py", "rqworker", "default"], env)


def run_pipeline(env: dict, single_ticks: int, batch_ticks: int, batch_size: int) -> None:
    """The same work twice: the demo's 30 items (one per chat, groups and private chats) in
    single mode, then 30 more like them in batch mode, and the two runs side by side."""
    manage(env, "batchsettings", "--batch-mode", "off")
    for _ in range(single_ticks):
        manage(env, "tick")
    manage(env, "batch_report", "--wait", "120", "--last", "0")
    manage(env, "demo_feed", "--pending", str(DEMO_ITEMS), "--once")
    manage(env, "batchsettings", "--batch-mode", "on", "--batch-size", str(batch_size))
    for _ in range(batch_ticks):
        manage(env, "tick")
    print(f"\nThe same work ({DEMO_ITEMS} replies, one per chat) in single mode, then in batch "
          f"mode ({batch_size} in flight):")
    manage(env, "batch_report", "--wait", "120", "--last", str(single_ticks + batch_ticks))
    print("Why: single mode waits for each reply before it asks for the next; batch mode keeps "
          f"{batch_size} in flight. Telegram's pacing does not bind here (one reply per chat); "
          "the dashboard's 'What limits throughput now' card says what does.", flush=True)


def stay_alive(env: dict, port: int, interval: float, web_log: Path) -> None:
    """The live part: tick loop, poll loop, feeder, web server; returns when one dies."""
    start("tick loop", [PYTHON, "manage.py", "tick", "--loop", "--interval", str(interval)],
          env)
    # Chats appear and people's messages arrive through getUpdates, as with a real bot.
    start("poll loop", [PYTHON, "manage.py", "telegram_poll", "--loop", "--timeout", "2"], env)
    start("feeder", [PYTHON, "manage.py", "demo_feed", "--pending", "30", "--interval",
                     str(interval)], env)
    # Its request log goes to a file: on the terminal it pushed the banner out of sight.
    with web_log.open("w") as log:
        children["web"] = subprocess.Popen(
            [PYTHON, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], cwd=ROOT,
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_or_exit(port, "the web server")
    print(banner(env, port, interval, web_log), flush=True)
    while True:
        for name, proc in children.items():
            if proc.poll() is not None:
                raise SystemExit(f"demo: {name} exited with status {proc.returncode}")
        time.sleep(0.5)


def banner(env: dict, port: int, interval: float, web_log: Path) -> str:
    exports = " ".join(f"{name}={shlex.quote(env[name])}" for name in SHARED_ENV)
    return f"""
demo: dashboard http://127.0.0.1:{port}/dashboard/   admin http://127.0.0.1:{port}/admin/
demo: log in as  demo / demo-botplatform
demo: running: a tick loop (every {interval:g} s), telegram_poll, a worker, a feeder, the fakes.
      Switch batch mode or batch size in the admin: a running run follows at its next refill.
demo: in a second shell, first:
  export {exports}
  .venv/bin/python manage.py demo add-bot "Chef Remy" --chat "Book club"    # a chat appears
  .venv/bin/python manage.py demo say "Any plans for Saturday?" --chat "Book club"
  .venv/bin/python manage.py demo fail --kind server_error --count 3       # dead items to requeue
demo: web server log: {web_log}
demo: Ctrl-C stops everything."""


def descendants(root: int) -> list[int]:
    """Every process below ``root``, from /proc (RQ's work-horse has a session of its own,
    so signalling process groups alone would miss it)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def signal_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_all(grace: float = 8.0) -> None:
    """SIGTERM every child (RQ finishes its job: a warm shutdown), a second SIGTERM to what
    still runs (RQ's cold shutdown kills its work-horse), then SIGKILL whatever is left of
    every process started below this one."""
    started = set(descendants(os.getpid()))
    for proc in reversed(children.values()):
        signal_quietly(proc.pid, signal.SIGTERM)
    for second in (False, True):
        deadline = time.monotonic() + (grace if not second else 3.0)
        while time.monotonic() < deadline and any(p.poll() is None for p in children.values()):
            time.sleep(0.1)
        for proc in children.values():
            if proc.poll() is None:
                signal_quietly(proc.pid, signal.SIGKILL if second else signal.SIGTERM)
    for pid in started | set(descendants(os.getpid())):
        signal_quietly(pid, signal.SIGKILL)
    for proc in children.values():
        proc.wait()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000),
                        help="the dashboard's port (make demo PORT=8010)")
    parser.add_argument("--db", type=Path, default=ROOT / "demo.sqlite3",
                        help="the demo's SQLite file (default demo.sqlite3)")
    parser.add_argument("--keep-db", action="store_true",
                        help="keep the previous run's database instead of starting fresh")
    parser.add_argument("--no-serve", action="store_true", help="stop after the report")
    parser.add_argument("--single-ticks", type=int, default=4)
    parser.add_argument("--batch-ticks", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--tick-interval", type=float, default=2.0)
    parser.add_argument("--fake-redis", action="store_true",
                        help="use fakeredis even when redis-server is on the PATH")
    return parser.parse_args()


def raise_stop(signum: int, frame: object) -> None:
    raise Stop


def main() -> int:
    args = parse_args()
    if not args.no_serve and port_taken(args.port):
        print(f"demo: port {args.port} is already in use; choose another, e.g. "
              f"make demo PORT={args.port + 10}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, raise_stop)
    env = demo_env(fresh_database(args.db.resolve(), args.keep_db))
    try:
        env["REDIS_URL"] = start_redis(env, args.fake_redis)
        manage(env, "migrate", "--verbosity", "0")
        manage(env, "load_demo_data")
        start_services(env, args.latency)
        run_pipeline(env, args.single_ticks, args.batch_ticks, args.batch_size)
        # The intake loop: a person writes, member bots reply with it in context, one bot
        # answers another, a bot posts on its cadence, and one update comes by webhook.
        manage(env, "demo_conversation")
        if not args.no_serve:
            stay_alive(env, args.port, args.tick_interval,
                       args.db.resolve().with_name("demo-web.log"))
    except (KeyboardInterrupt, Stop):
        print("\ndemo: stopping", flush=True)
    except subprocess.CalledProcessError as exc:
        print(f"demo: {shlex.join(map(str, exc.cmd[1:]))} failed (status {exc.returncode})",
              file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the clean-up finish
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
