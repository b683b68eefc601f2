"""The source document's module name for the circuit breakers, kept for code written against
it (``from batchgen.resilience import get_circuit_breaker_stats``). The breakers live in
``batchgen.state.breakers``; the product imports them from there."""

from __future__ import annotations

from batchgen.state.breakers import (
    CircuitBreaker,
    CircuitOpenError,
    get_circuit_breaker,
    get_circuit_breaker_stats,
    reset_circuit_breakers,
)

__all__ = ["CircuitBreaker", "CircuitOpenError", "get_circuit_breaker",
           "get_circuit_breaker_stats", "reset_circuit_breakers"]
