"""Model engines behind one protocol (``pipeline.types.Engine``): the openai-compatible
client and the offline draft engine. ``default_engine()`` picks by configuration."""
from __future__ import annotations

import logging

from django.conf import settings

from ..types import CallRecord, Engine

call_log = logging.getLogger("workflows.pipeline.model_call")


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


def log_call(call: CallRecord) -> None:
    """One log line per model request, written when it ends, in the thread that sent it: it
    carries the request id of the web request that started the task (reviewdesk/logs.py), and
    its facts as keys of the JSON line."""
    call_log.info(
        "model call %s (%s) %s in %d ms, %d+%d tokens", call.model_requested, call.purpose, call.outcome,
        call.latency_ms, call.prompt_tokens, call.completion_tokens,
        extra={"engine": call.engine, "model": call.model_requested, "model_reported": call.model_reported,
               "purpose": str(call.purpose), "outcome": str(call.outcome), "latency_ms": call.latency_ms,
               "prompt_tokens": call.prompt_tokens, "completion_tokens": call.completion_tokens,
               "http_status": call.http_status},
    )
