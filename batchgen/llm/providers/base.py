"""The small interface every provider implements."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Any

from batchgen.llm.config import ProviderSettings
from batchgen.llm.errors import ProviderError, scrub
from batchgen.llm.limits.rules import LastReply
from batchgen.llm.types import Completion, CompletionRequest


class Provider(ABC):
    """One provider per process, shared by every thread.

    Each API key gets its own SDK client, built on first use; all of them share one
    HTTP connection pool (the key travels in a per-request header, not in the pool).
    The SDKs never retry (``max_retries=0``): ``batchgen.llm.attempts`` does, so
    that every HTTP request, retries included, goes through the key's rate limiter.
    """

    name: str = ""
    # The SDK's client class, its HTTP client class and the httpx module that class is built
    # on (openai and gemini ship httpx2, groq httpx); each provider names its own.
    client_class: Any = None
    http_client_class: Any = None
    httpx_module: Any = None

    def __init__(self, config: ProviderSettings) -> None:
        self.config = config
        self.model = config.model
        # Filled by a response hook on the HTTP client: the rate-limit headers every reply
        # carries, which the SDKs drop once they have parsed a 200.
        self.replies = LastReply()
        self._clients: dict[str, Any] = {}
        self._endpoints: dict[str, Any] = {}  # per key: what a direct request needs
        self._http: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} model={self.model!r} base_url={self.config.base_url!r}>"

    def complete(self, request: CompletionRequest, api_key: str | None = None) -> Completion:
        """Send one request (one HTTP attempt); raise ProviderError for anything but a reply.

        Afterwards ``replies`` holds this thread's reply status and headers."""
        self.replies.clear()
        return self._complete(self.client(api_key), request)

    def client(self, api_key: str | None = None) -> Any:
        """The SDK client for ``api_key`` (default: the first configured key).

        Built on first use, so a missing key fails at call time, naming the variable.
        """
        api_key = api_key or self.config.api_key
        if not api_key:
            raise ProviderError(
                "config", f"{self.config.key_variable} is not set: the {self.name} provider "
                "needs an API key", retryable=False)
        client = self._clients.get(api_key)
        if client is None:
            with self._lock:  # many threads may ask for the client at once
                client = self._clients.get(api_key)
                if client is None:
                    if self._http is None:
                        self._http = self._build_http_client()
                    client = self._build_client(api_key, self._http)
                    self._clients[api_key] = client
        return client

    def scrub(self, message: str) -> str:
        return scrub(message, self.config.api_keys)

    def close(self) -> None:
        with self._lock:
            http, self._http = self._http, None
            self._clients, self._endpoints = {}, {}
        if http is not None:
            http.close()

    def _build_http_client(self) -> Any:
        """The connection pool every key's SDK client of this provider shares, sized for the
        largest worker pool (the SDKs' defaults keep 20 or 100 idle connections: with more
        workers every batch would open and drop fresh ones), with the hook that keeps each
        reply's rate-limit headers."""
        size = self.config.pool_size
        limits = self.httpx_module.Limits(max_connections=size * 2,
                                          max_keepalive_connections=size)
        return self.http_client_class(limits=limits,
                                      event_hooks={"response": [self.replies.hook]})

    def _build_client(self, api_key: str, http_client: Any) -> Any:
        """The SDK client for one key (the openai-style constructor; Gemini's differs)."""
        return self.client_class(
            api_key=api_key,
            base_url=self.config.base_url,
            timeout=self.config.timeout,
            max_retries=0,  # batchgen.llm.attempts retries, through the rate limiter
            http_client=http_client,
        )

    @abstractmethod
    def _complete(self, client: Any, request: CompletionRequest) -> Completion: ...
