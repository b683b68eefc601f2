"""Groq chat completions through the official ``groq`` SDK."""

from __future__ import annotations

from typing import Any

import groq
import httpx
from groq.types.chat import ChatCompletion as GroqChatCompletion

from batchgen.llm.providers.openai import OpenAICompatibleProvider


class GroqProvider(OpenAICompatibleProvider):
    """The groq SDK appends ``/openai/v1/chat/completions`` to GROQ_BASE_URL."""

    name = "groq"
    sdk = groq
    http = httpx  # groq's SDK still sends through httpx
    completion_type = GroqChatCompletion
    completion_path = "/openai/v1/chat/completions"

    def _build_http_client(self) -> Any:
        size = self.config.pool_size
        # groq's default http client keeps only 20 idle connections: with more
        # workers every batch would open (and later drop) fresh connections.
        return groq.DefaultHttpxClient(
            limits=httpx.Limits(max_connections=size * 2, max_keepalive_connections=size),
            event_hooks={"response": [self.replies.hook]},
        )

    def _build_client(self, api_key: str, http_client: Any) -> Any:
        return groq.Groq(
            api_key=api_key,
            base_url=self.config.base_url,
            timeout=self.config.timeout,
            max_retries=0,  # batchgen.llm.attempts retries, through the rate limiter
            http_client=http_client,
        )
