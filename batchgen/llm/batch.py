"""LLMBatchClient: many prompts in parallel over one warm thread pool and one SDK client.
Prompts are checked on the calling thread, all before the first is sent; each is filtered on
the pool thread that sends it (``client.execute``), which hands a plain result back. The
executor is cached per process and per worker count, so the next batch finds its threads and
the provider's connections warm.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from functools import partial
from typing import Any

from batchgen.core.sizes import check_batch_size
from batchgen.llm import config
from batchgen.llm.client import LLMClient, build_request, check_prompt, execute_chain
from batchgen.llm.types import CompletionRequest, GenerationResult

# A checked prompt's request, built (filtered) by the pool thread that sends it.
Build = Callable[[], CompletionRequest]

_executors: dict[int, ThreadPoolExecutor] = {}
_executors_lock = threading.Lock()


def shared_executor(max_workers: int) -> ThreadPoolExecutor:
    """The process-wide pool for this worker count, created on first use."""
    executor = _executors.get(max_workers)
    if executor is None:
        with _executors_lock:
            executor = _executors.get(max_workers)
            if executor is None:
                executor = ThreadPoolExecutor(max_workers=max_workers,
                                              thread_name_prefix=f"llm-batch-{max_workers}")
                _executors[max_workers] = executor
    return executor


def _forget_executors_in_child() -> None:
    # Threads do not survive fork (RQ forks a work-horse per job): a copied
    # executor would queue work that no thread ever runs.
    _executors.clear()


os.register_at_fork(after_in_child=_forget_executors_in_child)


class LLMBatchClient:
    """Parallel generation, with the kept API of ``batchgen.llm.compat``.

    ``max_workers`` defaults to BATCH_MAX_WORKERS, else min(32, cpu + 4).
    """

    def __init__(self, max_workers: int | None = None, provider: str | None = None) -> None:
        workers = config.default_max_workers() if max_workers is None else max_workers
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"max_workers must be a positive int, got {max_workers!r}")
        self.max_workers = workers
        self.llm = LLMClient(provider)

    @property
    def provider_name(self) -> str:
        return self.llm.provider_name

    @property
    def model(self) -> str:
        return config.model_for(self.llm.provider_name)

    def generate_batch(self, prompts: Sequence[str], temperature: float = 0.7,
                       max_tokens: int = 220, system_prompt: str | None = None,
                       top_p: float = 0.95, frequency_penalty: float = 0.4,
                       preserve_order: bool = True) -> list[str | None]:
        """One reply per prompt, None where generation failed.

        With ``preserve_order=False`` the list is in completion order (fastest
        first), so it can no longer be zipped with ``prompts``; use
        ``generate_batch_detailed`` when you need to know which is which.
        """
        results = self.generate_batch_detailed(
            prompts, temperature=temperature, max_tokens=max_tokens,
            system_prompt=system_prompt, top_p=top_p, frequency_penalty=frequency_penalty,
            preserve_order=preserve_order)
        return [result.text for result in results]

    def generate_batch_detailed(self, prompts: Sequence[str], preserve_order: bool = True,
                                **options: Any) -> list[GenerationResult]:
        """Like ``generate_batch`` with the reason, latency, tokens and attempts per prompt.

        ``[]`` gives ``[]``; a non-str prompt raises TypeError and an empty one
        ValueError, naming its index; more than MAX_BATCH_SIZE (50) prompts
        raises ValueError. Nothing is sent when the input is refused. Provider
        failures never raise: they are results with ``error_kind`` set.
        """
        check_batch_size(len(prompts))
        return self._run(self._requests(prompts, options), preserve_order)

    def iter_batch_detailed(self, prompts: Sequence[str],
                            **options: Any) -> Iterator[tuple[int, GenerationResult]]:
        """``(index, result)`` pairs in completion order, as each prompt finishes.

        The input is checked (same rules as ``generate_batch_detailed``) and every
        prompt is submitted before this returns, so the caller can save and send
        early replies while later ones are still in flight.
        """
        check_batch_size(len(prompts))
        futures = self._submit(self._requests(prompts, options))
        index_of = {future: index for index, future in enumerate(futures)}
        return ((index_of[future], future.result()) for future in as_completed(futures))

    def iter_batch_groups(self, prompts: Sequence[str],
                          **options: Any) -> Iterator[list[tuple[int, GenerationResult]]]:
        """Like ``iter_batch_detailed``, but every result that has finished by the
        time the caller asks comes in one list, so the caller can record a burst
        of replies at once (one database transaction instead of one each)."""
        check_batch_size(len(prompts))
        futures = self._submit(self._requests(prompts, options))
        index_of = {future: index for index, future in enumerate(futures)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield sorted(((index_of[f], f.result()) for f in done), key=lambda pair: pair[0])

    def generate_many_detailed(self, prompts: Sequence[str], preserve_order: bool = True,
                               **options: Any) -> list[GenerationResult]:
        """Any number of prompts, streamed through the same warm pool.

        Every prompt is queued at once and a worker starts the next as soon as
        it finishes one, so a slow reply holds up one worker, not a chunk of 50.
        """
        return self._run(self._requests(prompts, options), preserve_order)

    def submit(self, prompt: str, **options: Any) -> Future[GenerationResult]:
        """One prompt on the warm pool; the future's result is its GenerationResult.

        For callers that keep a number of prompts in flight and refill as each
        finishes (the pipeline's drain), each with its own options, such as the
        bot's own ``system_prompt``. The prompt is checked before anything is sent.
        """
        return self._submit(self._requests([prompt], options))[0]

    def generate_with_fallback(self, prompts: Sequence[str], temperature: float = 0.7,
                               retry_failed: bool = True, **options: Any) -> list[str | None]:
        """``generate_batch``, then the failed prompts once more (in order)."""
        results = self.generate_with_fallback_detailed(
            prompts, temperature=temperature, retry_failed=retry_failed, **options)
        return [result.text for result in results]

    def generate_with_fallback_detailed(self, prompts: Sequence[str], temperature: float = 0.7,
                                        retry_failed: bool = True,
                                        **options: Any) -> list[GenerationResult]:
        """Retries once each result that failed for a reason a retry can help
        (``retryable``: 429, 5xx, timeouts, empty replies...), not bad keys or filters."""
        options.pop("preserve_order", None)  # the retry needs the order to match
        results = self.generate_batch_detailed(prompts, temperature=temperature, **options)
        failed = [i for i, result in enumerate(results) if not result.ok and result.retryable]
        if retry_failed and failed:
            retried = self.generate_batch_detailed([prompts[i] for i in failed],
                                                   temperature=temperature, **options)
            for index, result in zip(failed, retried, strict=True):
                results[index] = result
        return results

    def _requests(self, prompts: Sequence[str], options: dict[str, Any]) -> list[Build]:
        if isinstance(prompts, str | bytes) or not isinstance(prompts, Sequence):
            raise TypeError("prompts must be a list of str")
        defaults = {"system_prompt": None, "temperature": 0.7, "max_tokens": 220,
                    "top_p": 0.95, "frequency_penalty": 0.4, "cache_key": None}
        unknown = set(options) - set(defaults)
        if unknown:
            raise TypeError(f"unexpected keyword arguments: {sorted(unknown)}")
        settings = {**defaults, **options}
        # Every prompt is checked before the first is sent; the filtering waits for a pool
        # thread, so the first requests go out at once rather than after all are filtered.
        return [partial(build_request, check_prompt(prompt, index), index, **settings)
                for index, prompt in enumerate(prompts)]

    def _submit(self, requests: list[Build]) -> list[Future[GenerationResult]]:
        if not requests:
            return []
        chain = self.llm.chain  # resolved once per batch, not per prompt
        executor = shared_executor(self.max_workers)
        return [executor.submit(_build_and_execute, chain, request) for request in requests]

    def _run(self, requests: list[Build],
             preserve_order: bool) -> list[GenerationResult]:
        futures = self._submit(requests)
        done = futures if preserve_order else as_completed(futures)
        return [future.result() for future in done]


def _build_and_execute(chain: Sequence[Any], build: Build) -> GenerationResult:
    return execute_chain(chain, build())


def generate_batch(prompts: Sequence[str], **options: Any) -> list[str | None]:
    """The one-liner: ``LLMBatchClient().generate_batch(prompts, **options)``."""
    max_workers = options.pop("max_workers", None)
    return LLMBatchClient(max_workers=max_workers).generate_batch(prompts, **options)
