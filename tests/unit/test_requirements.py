"""requirements.txt is what production runs; requirements-dev.txt what tests, lint, bench and
the demo add. A package pinned but unused, or used but not pinned, is caught here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_DIRS = ("batchgen", "botplatform")
# Code that only the demo, the tests and the benchmark run (never a production process).
DEV_ONLY = ("batchgen/fakes/", "batchgen/management/commands/fake_")
IMPORT_NAMES = {"django": "django", "django-rq": "django_rq", "dj-database-url": "dj_database_url",
                "django-prometheus": "django_prometheus", "psycopg": "psycopg",
                "google-genai": "google.genai", "prometheus_client": "prometheus_client"}
# Loaded by name rather than by an import statement: Django's postgresql backend imports
# psycopg for DATABASE_URL=postgres://, and gunicorn is the web command.
LOADED_BY_NAME = {"psycopg": "postgres://", "gunicorn": "gunicorn botplatform.wsgi"}
DEV_TOOLS = {"pytest", "pytest-django", "pytest-playwright", "playwright", "ruff", "matplotlib",
             "aiohttp", "fakeredis", "pyyaml", "hypothesis"}


def pinned(path: Path) -> dict[str, str]:
    names = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-r"):
            name, _, version = line.partition("==")
            names[re.sub(r"\[.*\]", "", name).lower()] = version
    return names


def runtime_source() -> str:
    files = [p for d in RUNTIME_DIRS for p in (ROOT / d).rglob("*.py")
             if not str(p.relative_to(ROOT)).startswith(DEV_ONLY) and "migrations" not in p.parts]
    files += [ROOT / "gunicorn.conf.py", ROOT / "Dockerfile", ROOT / "docker-compose.yml"]
    return "\n".join(p.read_text() for p in files if p.exists())


def test_every_runtime_package_is_used_by_code_a_production_process_runs() -> None:
    source = runtime_source()
    unused = []
    for name in pinned(ROOT / "requirements.txt"):
        module = IMPORT_NAMES.get(name, name.replace("-", "_"))
        used = (re.search(rf"^\s*(import|from) {re.escape(module)}\b", source, re.M)
                or f'"{module}.' in source or f'"{module}"' in source
                or (name in LOADED_BY_NAME and LOADED_BY_NAME[name] in source))
        if not used:
            unused.append(name)
    assert unused == []


def test_every_third_party_module_runtime_code_imports_is_pinned() -> None:
    runtime = pinned(ROOT / "requirements.txt")
    for module in ("httpx", "httpx2", "openai", "groq", "redis", "rq"):
        assert re.search(rf"^\s*(import|from) {module}\b", runtime_source(), re.M)
        assert module in runtime


def test_dev_tools_stay_out_of_the_production_image() -> None:
    runtime, dev = pinned(ROOT / "requirements.txt"), pinned(ROOT / "requirements-dev.txt")
    assert DEV_TOOLS & set(runtime) == set()
    assert DEV_TOOLS <= set(dev)
    assert {"limits", "lupa"} & (set(runtime) | set(dev)) == set()  # unused; fakeredis[lua]
