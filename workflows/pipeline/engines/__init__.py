"""Model engines behind one protocol (``pipeline.types.Engine``): the openai-compatible
client and the offline draft engine. ``default_engine()`` picks by configuration."""
from __future__ import annotations

from django.conf import settings

from ..types import Engine


def engine_name() -> str:
    return "openai" if settings.OPENAI_API_KEY else "offline"


def default_engine() -> Engine:
    """The engine for this deployment: one instance per process (the openai one holds the
    HTTP client, whose TLS context costs ~18 ms of CPU to build)."""
    if engine_name() == "offline":
        from .offline import OfflineEngine

        return OfflineEngine()
    from .openai import shared_engine

    return shared_engine()


def model_available(model: str) -> bool:
    """Would a request to this model be sent now (its circuit is not open)? The offline
    engine is always available."""
    if engine_name() == "offline":
        return True
    from .breaker import any_circuit_allows

    return any_circuit_allows([model])
