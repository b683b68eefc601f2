"""The fake LLM provider assembled: the chat endpoints (``llm_server``) and the Files and
Batches endpoints of the provider batch route (``llm_batches``) on one aiohttp app."""

from __future__ import annotations

from aiohttp import web

from batchgen.fakes import llm_batches, llm_server
from batchgen.fakes.llm_server import FakeLLMConfig

__all__ = ["FakeLLMConfig", "make_app", "run"]


def make_app(config: FakeLLMConfig | None = None) -> web.Application:
    """The fake as an aiohttp application (run it with ``run`` or in a test thread)."""
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[llm_server.STATE] = llm_server.FakeState(config or FakeLLMConfig())
    app.router.add_post("/v1/chat/completions", llm_server.openai_chat)
    app.router.add_post("/openai/v1/chat/completions", llm_server.groq_chat)
    app.router.add_post("/v1beta/models/{model}:generateContent", llm_server.gemini_generate)
    app.router.add_post("/v1/models/{model}:generateContent", llm_server.gemini_generate)
    app.router.add_post("/_control", llm_server.control)
    app.router.add_get("/_stats", llm_server.stats)
    app.router.add_post("/_reset", llm_server.reset)
    llm_batches.register(app)  # Files and Batches endpoints (the provider batch route)
    return app


def run(host: str = "127.0.0.1", port: int = 8901,
        config: FakeLLMConfig | None = None) -> None:
    """Serve until interrupted; a large backlog so hundreds of clients can connect at once."""
    web.run_app(make_app(config), host=host, port=port, backlog=2048, access_log=None,
                handler_cancellation=True, print=None)
