"""Serve the fake OpenAI / Groq / Gemini API (see batchgen/fakes/llm_server.py)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from batchgen.fakes.llm_app import FakeLLMConfig, run


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8901)
        parser.add_argument("--latency", type=float, default=0.5, help="seconds (mean)")
        parser.add_argument("--jitter", type=float, default=0.0, help="uniform 0..jitter s")
        parser.add_argument("--lognormal", type=float, default=None, metavar="SIGMA",
                            help="lognormal latency with this sigma around --latency")
        parser.add_argument("--rpm", type=int, default=0, help="requests per minute, 0: no limit")
        parser.add_argument("--fault", default=None, help="fault every request, e.g. 503")

    def handle(self, *args: Any, **options: Any) -> None:
        config = FakeLLMConfig(
            latency=options["latency"], jitter=options["jitter"], rpm=options["rpm"],
            fault=options["fault"],
            latency_mode="lognormal" if options["lognormal"] is not None else "fixed",
            latency_sigma=options["lognormal"] or 0.5)
        self.stdout.write(f"fake LLM API on http://{options['host']}:{options['port']} "
                          f"(OPENAI_BASE_URL=.../v1, GROQ_BASE_URL=..., "
                          f"GOOGLE_GEMINI_BASE_URL=...)")
        run(options["host"], options["port"], config)
