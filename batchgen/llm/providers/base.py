"""The small interface every provider implements, and the attempt counter."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any

from batchgen.llm.config import ProviderSettings
from batchgen.llm.errors import ProviderError, scrub
from batchgen.llm.types import Completion, CompletionRequest


class AttemptCounter:
    """Counts HTTP requests made by the current thread.

    The SDKs retry inside one call and do not say how often; an httpx request
    hook on the shared client bumps a thread-local counter, and since each call
    runs start to finish on one thread the count belongs to that call.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def start(self) -> None:
        self._local.count = 0

    def hook(self, request: Any) -> None:
        self._local.count = getattr(self._local, "count", 0) + 1

    @property
    def count(self) -> int:
        return getattr(self._local, "count", 0)


class Provider(ABC):
    """One SDK client per provider per process, shared by every thread."""

    name: str = ""

    def __init__(self, config: ProviderSettings) -> None:
        self.config = config
        self.model = config.model
        self.attempts = AttemptCounter()
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} model={self.model!r} base_url={self.config.base_url!r}>"

    def complete(self, request: CompletionRequest) -> Completion:
        """Send one request; raise ProviderError for anything but a parsed reply."""
        client = self.client()
        self.attempts.start()
        try:
            completion = self._complete(client, request)
        except ProviderError as exc:
            exc.attempts = max(self.attempts.count, 1)
            raise
        return replace(completion, attempts=max(self.attempts.count, 1))

    def client(self) -> Any:
        """The shared SDK client, built on first use (so a missing key fails at call time)."""
        if not self.config.api_key:
            raise ProviderError(
                "config", f"{self.config.key_variable} is not set: the {self.name} provider "
                "needs an API key", retryable=False)
        if self._client is None:
            with self._lock:  # many threads may ask for the client at once
                if self._client is None:
                    self._client = self._build_client()
        return self._client

    def scrub(self, message: str) -> str:
        return scrub(message, (self.config.api_key,))

    def close(self) -> None:
        client, self._client = self._client, None
        closer = getattr(client, "close", None)
        if closer is not None:
            closer()

    @abstractmethod
    def _build_client(self) -> Any: ...

    @abstractmethod
    def _complete(self, client: Any, request: CompletionRequest) -> Completion: ...
