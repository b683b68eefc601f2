"""docker-compose.yml, the Dockerfile and .dockerignore, read as an engine would (none here)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands
from django.urls import resolve

ROOT = Path(__file__).resolve().parents[2]
LONG_RUNNING = ("web", "worker", "scheduler", "redis", "postgres")


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def dockerfile() -> list[tuple[str, str]]:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    return [tuple(line.split(" ", 1)) for line in lines if line and not line.startswith("#")]


def command_of(service: dict) -> list[str]:
    if "command" not in service:  # the image's CMD
        return yaml.safe_load(dict(dockerfile())["CMD"])
    command = service["command"]
    if command[:2] == ["sh", "-c"]:
        command = shlex.split(command[2].replace("$$", "$").removeprefix("exec "))
    return command


def test_every_long_running_service_restarts_and_migrate_runs_once(services) -> None:
    assert {name: services[name].get("restart") for name in LONG_RUNNING} == dict.fromkeys(
        LONG_RUNNING, "unless-stopped")
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker", "scheduler"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"}


def test_each_app_service_runs_a_command_this_project_has(services) -> None:
    commands = {name: command_of(services[name]) for name in ("migrate", "web", "worker",
                                                              "scheduler")}
    assert commands["web"][:4] == ["gunicorn", "botplatform.wsgi", "-c", "gunicorn.conf.py"]
    assert (ROOT / "gunicorn.conf.py").exists()
    for name in ("migrate", "worker", "scheduler"):
        assert commands[name][:2] == ["python", "manage.py"]
        assert commands[name][2] in get_commands(), name
    assert commands["scheduler"][2:4] == ["tick", "--loop"]
    assert commands["worker"][2:4] == ["rqworker", "default"]


def test_healthchecks_use_healthz_and_the_heartbeats(services) -> None:
    web = " ".join(services["web"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/healthz" in web
    assert resolve("/healthz").url_name == "healthz"
    worker_name = command_of(services["worker"])[-1]
    assert services["worker"]["healthcheck"]["test"] == [
        "CMD-SHELL", f'python manage.py health --worker "{worker_name.replace("$", "$$")}"']
    assert services["scheduler"]["healthcheck"]["test"] == [
        "CMD", "python", "manage.py", "health", "--tick"]
    for name in LONG_RUNNING:
        assert services[name]["healthcheck"]["retries"] >= 3, name


def test_the_image_installs_runtime_requirements_only_and_runs_as_a_user() -> None:
    steps = dockerfile()
    runs = [args for op, args in steps if op == "RUN"]
    assert "pip install --no-cache-dir -r requirements.txt" in runs
    assert not any("requirements-dev" in args for args in runs)
    assert any("manage.py collectstatic --noinput" in args for args in runs)
    ops = [op for op, _ in steps]
    user = dict(steps)["USER"]
    assert user not in ("root", "0") and ops.index("USER") > ops.index("RUN")
    assert ops[-1] == "CMD"
    # requirements first, code after: a code change does not reinstall every package.
    assert steps.index(("COPY", "requirements.txt .")) < steps.index(("COPY", ". ."))


def test_dockerignore_keeps_the_venv_databases_and_secrets_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {".venv", ".git", ".env", "*.sqlite3", "db.sqlite3*", "staticfiles"} <= set(ignored)
    assert "!.env.example" in ignored
