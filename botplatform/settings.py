"""Django settings for botplatform: one module, read from the environment.

Every variable is parsed by a helper from ``botplatform.env`` that refuses a
bad value with an error naming the variable and the rule. With no environment
at all the project runs on SQLite in DEBUG mode, so a fresh checkout works.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from botplatform.env import (
    env_bool,
    env_choice,
    env_fernet_keys,
    env_float,
    env_int,
    env_list,
    env_str,
    env_url,
    proxy_ssl_header,
)
from botplatform.logformat import LOG_LEVELS, logging_config
from botplatform.prices import load_prices

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", True)

_DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me-in-production-0123456789"
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET_KEY if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")

# Bot tokens are encrypted at rest with these (comma-separated Fernet keys, the first one
# encrypts; batchgen/models/secrets.py). Required with DEBUG off.
FIELD_ENCRYPTION_KEYS = env_fernet_keys("FIELD_ENCRYPTION_KEYS", DEBUG, SECRET_KEY)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_rq",
    "django_prometheus",
    "batchgen",
    "botplatform.apps.BotplatformConfig",  # its system checks (botplatform/checks.py)
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "botplatform.urls"
WSGI_APPLICATION = "botplatform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database(url: str) -> dict[str, Any]:
    try:
        config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=60))
    except Exception as exc:  # dj-database-url raises several types
        raise ImproperlyConfigured(
            f"DATABASE_URL={url!r} is not a database URL "
            f"(sqlite:///path or postgres://user@host:port/name): {exc}"
        ) from None
    if not config.get("ENGINE") or not config.get("NAME"):
        raise ImproperlyConfigured(
            f"DATABASE_URL={url!r} names no database "
            "(sqlite:///path or postgres://user@host:port/name)"
        )
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Several processes (tick, workers, web) share the file: wait for locks.
        config["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
        # A file, not pytest-django's in-memory default: the end-to-end tests
        # start real tick and rqworker processes that must see the test data.
        # One file per test run, so concurrent runs never share it.
        config["TEST"] = {"NAME": str(Path(tempfile.gettempdir())
                                      / f"botplatform-test-{os.getpid()}.sqlite3")}
    return config


DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
DATABASES = {"default": _database(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(
        f"REDIS_URL={REDIS_URL!r} must start with redis://, rediss:// or unix://"
    )

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = ["botplatform.formats"]  # one 24-hour time format, admin included

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]

LOGIN_URL = "/admin/login/"

# --- LLM providers (the kept names first, see docs/compat.md) -------------------
# Flat names, exactly as the environment variables the README documents; batchgen.llm.config
# reads them per provider into one typed ProviderSettings when used.
LLM_PROVIDERS = ("openai", "gemini", "groq")
LLM_PROVIDER = env_choice("LLM_PROVIDER", "openai", LLM_PROVIDERS)
LLM_MODEL = env_str("LLM_MODEL", "")  # empty: the provider's default model
LLM_DEFAULT_MODELS = {
    "openai": "gpt-4o-mini",
    "gemini": "gemini-2.5-flash",
    "groq": "llama-3.1-8b-instant",
}
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_url("OPENAI_BASE_URL", "https://api.openai.com/v1")
OPENAI_TIMEOUT = env_float("OPENAI_TIMEOUT", 30.0, minimum=0.1)
GEMINI_API_KEY = env_str("GEMINI_API_KEY")
GOOGLE_GEMINI_BASE_URL = env_url(
    "GOOGLE_GEMINI_BASE_URL", "https://generativelanguage.googleapis.com"
)
GEMINI_TIMEOUT = env_float("GEMINI_TIMEOUT", 30.0, minimum=0.1)
GROQ_API_KEY = env_str("GROQ_API_KEY")
GROQ_BASE_URL = env_url("GROQ_BASE_URL", "https://api.groq.com")
GROQ_TIMEOUT = env_float("GROQ_TIMEOUT", 30.0, minimum=0.1)
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 2, minimum=0, maximum=10)

LLM_CIRCUIT_BREAKER_THRESHOLD = env_int("LLM_CIRCUIT_BREAKER_THRESHOLD", 5, minimum=1)
LLM_CIRCUIT_BREAKER_TIMEOUT = env_float("LLM_CIRCUIT_BREAKER_TIMEOUT", 120.0, minimum=0.0)

# Several keys per provider (comma-separated), used in turn; *_API_KEY still works alone.
OPENAI_API_KEYS = env_list("OPENAI_API_KEYS")
GEMINI_API_KEYS = env_list("GEMINI_API_KEYS")
GROQ_API_KEYS = env_list("GROQ_API_KEYS")
# A key answering 401 is out of rotation (in every worker) for this long.
LLM_KEY_DISABLE_SECONDS = env_float("LLM_KEY_DISABLE_SECONDS", 3600.0, minimum=1.0)
# Providers tried in order when the primary is down; only those with a key are used.
LLM_FALLBACK_PROVIDERS = env_list("LLM_FALLBACK_PROVIDERS")
if set(LLM_FALLBACK_PROVIDERS) - set(LLM_PROVIDERS):
    raise ImproperlyConfigured(f"LLM_FALLBACK_PROVIDERS={','.join(LLM_FALLBACK_PROVIDERS)!r}: "
                               f"each must be one of {', '.join(LLM_PROVIDERS)}")
# Client-side limits per budget (see the scopes below), shared by every worker through Redis;
# unset = learned from the replies. A configured limit is a ceiling over an advertised one.
# The provider's own variable wins over LLM_*; 0 there means "no limit for this provider".
LLM_RPM_LIMIT = env_int("LLM_RPM_LIMIT", None, minimum=0)
LLM_TPM_LIMIT = env_int("LLM_TPM_LIMIT", None, minimum=0)
OPENAI_RPM_LIMIT = env_int("OPENAI_RPM_LIMIT", None, minimum=0)
OPENAI_TPM_LIMIT = env_int("OPENAI_TPM_LIMIT", None, minimum=0)
GEMINI_RPM_LIMIT = env_int("GEMINI_RPM_LIMIT", None, minimum=0)
GEMINI_TPM_LIMIT = env_int("GEMINI_TPM_LIMIT", None, minimum=0)
GROQ_RPM_LIMIT = env_int("GROQ_RPM_LIMIT", None, minimum=0)
GROQ_TPM_LIMIT = env_int("GROQ_TPM_LIMIT", None, minimum=0)
# Whose budget a key spends: "account" (default), one budget per provider and model shared by
# all its keys, as OpenAI, Gemini and Groq count; "key", one each (keys of different accounts).
# The provider's own variable (empty = unset) wins over LLM_RATE_LIMIT_SCOPE.
RATE_LIMIT_SCOPES = ("account", "key")
LLM_RATE_LIMIT_SCOPE = env_choice("LLM_RATE_LIMIT_SCOPE", "account", RATE_LIMIT_SCOPES)
OPENAI_RATE_LIMIT_SCOPE = env_choice("OPENAI_RATE_LIMIT_SCOPE", "", (*RATE_LIMIT_SCOPES, ""))
GEMINI_RATE_LIMIT_SCOPE = env_choice("GEMINI_RATE_LIMIT_SCOPE", "", (*RATE_LIMIT_SCOPES, ""))
GROQ_RATE_LIMIT_SCOPE = env_choice("GROQ_RATE_LIMIT_SCOPE", "", (*RATE_LIMIT_SCOPES, ""))
# Longest a request waits for limiter capacity; beyond it the item goes back to the queue.
LLM_RATE_LIMIT_MAX_WAIT = env_float("LLM_RATE_LIMIT_MAX_WAIT", 30.0, minimum=0.0)

BATCH_MAX_WORKERS = env_int("BATCH_MAX_WORKERS", None, minimum=1, maximum=256)

# USD per million tokens: (input, cached input, output); the Batch API price defaults to half.
# LLM_PRICES_FILE (a JSON file) and then LLM_PRICES_JSON override entries, model by model
# (format in botplatform/prices.py). A model missing here gets no cost at all (None), never a
# misleading 0.
LLM_PRICES_FILE = env_str("LLM_PRICES_FILE")
LLM_PRICES_JSON = env_str("LLM_PRICES_JSON")
LLM_PRICES = load_prices({
    "gpt-4o-mini": (0.15, 0.075, 0.60),
    "gpt-4o": (2.50, 1.25, 10.00),
    "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "gemini-2.5-flash": (0.30, 0.075, 2.50),
    "gemini-2.0-flash": (0.10, 0.025, 0.40),
    "llama-3.1-8b-instant": (0.05, 0.025, 0.08),  # Groq: cached tokens at half
    "llama-3.3-70b-versatile": (0.59, 0.295, 0.79),
}, LLM_PRICES_FILE, LLM_PRICES_JSON)

# --- Queue and pipeline ------------------------------------------------------
# Both become timedeltas added to "now"; a day is far beyond any sensible value.
BATCH_LEASE_SECONDS = env_int("BATCH_LEASE_SECONDS", 600, minimum=10, maximum=86_400)
BATCH_MAX_ATTEMPTS = env_int("BATCH_MAX_ATTEMPTS", 3, minimum=1, maximum=20)
BATCH_RETRY_BACKOFF_SECONDS = env_float("BATCH_RETRY_BACKOFF_SECONDS", 30.0, minimum=0.0,
                                        maximum=86_400.0)
# A run refills (claims the next item as each reply finishes) until the queue is empty or
# one of these bounds is reached; then the worker takes the next run, so settings changed in
# the admin apply within BATCH_DRAIN_MAX_SECONDS.
BATCH_DRAIN_MAX_ITEMS = env_int("BATCH_DRAIN_MAX_ITEMS", 1000, minimum=1)
BATCH_DRAIN_MAX_SECONDS = env_float("BATCH_DRAIN_MAX_SECONDS", 120.0, minimum=1.0)
# Chat-aware delivery: an item is claimed only when its bot may post in its chat within this
# many seconds (about one LLM latency), so its reply is written just before it can go out.
DELIVERY_CLAIM_HORIZON_SECONDS = env_float("DELIVERY_CLAIM_HORIZON_SECONDS", 3.0,
                                           minimum=0.0, maximum=3600.0)
# A run whose remaining work is all waiting for posting slots waits up to this long for the
# next one instead of ending (a backlog bound by Telegram drains at its pace, not the tick's).
# While the LLM rate budget binds, this share of a run's slots is kept for replies to people
# and mentions: cadence posts and bot-to-bot turns never take them all.
DELIVERY_URGENT_SHARE = env_float("DELIVERY_URGENT_SHARE", 0.3, minimum=0.0, maximum=0.9)
DELIVERY_SLOT_WAIT_SECONDS = env_float("DELIVERY_SLOT_WAIT_SECONDS", 15.0, minimum=0.0,
                                       maximum=600.0)
# An item whose worker stopped this many times while holding it ends dead.
BATCH_MAX_CRASHES = env_int("BATCH_MAX_CRASHES", 3, minimum=1, maximum=100)
# Longest wait a server may ask for (Telegram retry_after, LLM Retry-After, an open breaker)
# that defers the item; above it the item ends dead with the reason.
BATCH_MAX_DEFER_SECONDS = env_float("BATCH_MAX_DEFER_SECONDS", 86400.0, minimum=1.0)
# The provider batch route (admin setting batch_route_providers turns it on per provider).
# An item goes to a provider batch only if its deliver_by is at least MIN_SLACK away; one
# still waiting on a batch FALLBACK seconds before its deadline returns to the sync path.
BATCH_ROUTE_MIN_SLACK_SECONDS = env_float("BATCH_ROUTE_MIN_SLACK_SECONDS", 3600.0, minimum=1.0)
BATCH_ROUTE_FALLBACK_SECONDS = env_float("BATCH_ROUTE_FALLBACK_SECONDS", 900.0, minimum=1.0)
if BATCH_ROUTE_FALLBACK_SECONDS >= BATCH_ROUTE_MIN_SLACK_SECONDS:
    # Else every item submitted would be due back at once: a batch for nothing.
    raise ImproperlyConfigured(
        f"BATCH_ROUTE_FALLBACK_SECONDS={BATCH_ROUTE_FALLBACK_SECONDS:g} must be less than "
        f"BATCH_ROUTE_MIN_SLACK_SECONDS={BATCH_ROUTE_MIN_SLACK_SECONDS:g}")
# How long a cadence post may wait (capped by the membership's cadence).
BATCH_ROUTE_CADENCE_DEADLINE_SECONDS = env_float("BATCH_ROUTE_CADENCE_DEADLINE_SECONDS",
                                                 4 * 3600.0, minimum=60.0)

# --- Telegram ----------------------------------------------------------------
TELEGRAM_API_BASE_URL = env_url("TELEGRAM_API_BASE_URL", "https://api.telegram.org")
TELEGRAM_TIMEOUT = env_float("TELEGRAM_TIMEOUT", 10.0, minimum=0.1)
# A longer reply is cut at a sentence end so that it goes as at most this many messages.
TELEGRAM_MAX_PARTS = env_int("TELEGRAM_MAX_PARTS", 4, minimum=1, maximum=20)

# --- RQ and metrics ----------------------------------------------------------
RQ_QUEUES = {"default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 900}}
RQ_SHOW_ADMIN_LINK = True
# `manage.py rqworker default` uses it: the pipeline and the LLM SDKs are
# imported once in the worker, not again in every forked work-horse (~2 s each).
RQ = {"WORKER_CLASS": "batchgen.jobs.PreloadedWorker"}
METRICS_TOKEN = env_str("METRICS_TOKEN")

# --- Hosts, proxy and production hardening (``manage.py check --deploy``) -----------
# Behind a reverse proxy that terminates TLS, set SECURE_PROXY_SSL_HEADER to the header it
# sets (X-Forwarded-Proto) so Django knows the request was HTTPS. Only then: a client could
# send the header itself when nothing in front of gunicorn overwrites it.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
CSRF_FAILURE_VIEW = "batchgen.views.csrf_failure"  # names HTTPS and CSRF_TRUSTED_ORIGINS
SECURE_PROXY_SSL_HEADER = proxy_ssl_header("SECURE_PROXY_SSL_HEADER")
# Load balancers probe /healthz over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# --- Health (batchgen/health.py): when the dashboard and /metrics call things stale ---
HEALTH_TICK_STALE_SECONDS = env_float("HEALTH_TICK_STALE_SECONDS", 60.0, minimum=1.0)
HEALTH_WORKER_STALE_SECONDS = env_float("HEALTH_WORKER_STALE_SECONDS", 90.0, minimum=1.0)
HEALTH_PENDING_STALE_SECONDS = env_float("HEALTH_PENDING_STALE_SECONDS", 300.0, minimum=1.0)

# --- Logging: one format for the project, RQ, tick and gunicorn's workers ---------------
LOG_FORMAT = env_choice("LOG_FORMAT", "plain", ("plain", "json"))
LOGGING = logging_config(LOG_FORMAT, env_choice("LOG_LEVEL", "INFO", LOG_LEVELS).upper())

# --- Intake: Telegram updates, chat history, behaviour ------------------------
# The system prompt of every bot that has none of its own; empty: batchgen.core.prompts' default.
BOT_DEFAULT_SYSTEM_PROMPT = env_str("BOT_DEFAULT_SYSTEM_PROMPT")
# How much of a chat's history goes into a prompt (estimated tokens, newest kept first).
INTAKE_HISTORY_TOKENS = env_int("INTAKE_HISTORY_TOKENS", 1000, minimum=0)
# Telegram's own limit is 4096; a longer "message" is not from Telegram and is skipped.
INTAKE_MAX_MESSAGE_CHARS = env_int("INTAKE_MAX_MESSAGE_CHARS", 4096, minimum=1)
# Public base URL for setWebhook (e.g. https://bots.example.com); empty: use telegram_poll.
INTAKE_WEBHOOK_BASE_URL = env_str("INTAKE_WEBHOOK_BASE_URL")
