"""Groq chat completions through the official ``groq`` SDK."""

from __future__ import annotations

import groq
import httpx
from groq.types.chat import ChatCompletion as GroqChatCompletion

from batchgen.llm.providers.openai import OpenAICompatibleProvider


class GroqProvider(OpenAICompatibleProvider):
    """The groq SDK appends ``/openai/v1/chat/completions`` to GROQ_BASE_URL."""

    name = "groq"
    sdk = groq
    client_class = groq.Groq
    http_client_class = groq.DefaultHttpxClient
    httpx_module = httpx
    completion_type = GroqChatCompletion
    completion_path = "/openai/v1/chat/completions"
