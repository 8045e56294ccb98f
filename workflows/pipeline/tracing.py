"""OpenTelemetry spans around the pipeline's stages, with the GenAI semantic conventions.

``@stage("call")`` wraps a stage of ``run()`` in a span named ``pipeline.call``; what the stage
returns is described on its span: a model answer (EngineReply) with the GenAI attributes
(``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` /
``output_tokens``, ``gen_ai.provider.name`` and the older ``gen_ai.system``), one span event
per HTTP request the answer took, and the whole draft (DraftResult) on the ``pipeline.run``
span that holds the others.

Nothing is traced until ``use_tracer_provider()`` is called (reviewdesk/observability.py does
when OTEL_EXPORTER_OTLP_ENDPOINT is set; the tests give it an in-memory exporter): until then
each wrapper is one attribute test and a direct call, so the pipeline stays as fast as without
it, and it imports even where opentelemetry is not installed.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

INSTRUMENTATION = "reviewdesk.pipeline"

_tracer = None  # an opentelemetry Tracer once tracing is on


def use_tracer_provider(provider) -> None:
    """Trace the pipeline with ``provider`` (an SDK TracerProvider); None turns tracing off."""
    global _tracer
    _tracer = provider.get_tracer(INSTRUMENTATION) if provider is not None else None


def enabled() -> bool:
    return _tracer is not None


def stage(name: str, *, attributes: Callable[..., Mapping[str, Any]] | None = None):
    """Wrap a pipeline stage in the span ``pipeline.<name>``. ``attributes(*args, **kwargs)``
    gives attributes known from the arguments (the workflow of the run)."""

    def wrap(fn):
        @functools.wraps(fn)
        def traced(*args, **kwargs):
            tracer = _tracer
            if tracer is None:
                return fn(*args, **kwargs)
            with tracer.start_as_current_span(f"pipeline.{name}") as span:
                if attributes is not None:
                    span.set_attributes(dict(attributes(*args, **kwargs)))
                result = fn(*args, **kwargs)
                describe(span, result)
                return result

        return traced

    return wrap


def describe(span, result) -> None:
    """Put what a stage returned on its span, by the shape of the result."""
    calls = getattr(result, "calls", None)
    if calls is None or not span.is_recording():
        return
    engine = getattr(result, "engine", "")
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": engine,
        "gen_ai.system": engine,
        "gen_ai.request.model": getattr(result, "model_requested", ""),
        "gen_ai.usage.input_tokens": sum(c.prompt_tokens for c in calls),
        "gen_ai.usage.output_tokens": sum(c.completion_tokens for c in calls),
        "reviewdesk.calls": len(calls),
        "reviewdesk.cost_usd": float(sum(c.cost_usd for c in calls)),
    }
    reported = getattr(result, "model_reported", None) or getattr(result, "model", "")
    if reported:
        attrs["gen_ai.response.model"] = reported
    if getattr(result, "finish_reason", ""):
        attrs["gen_ai.response.finish_reasons"] = (result.finish_reason,)
    if hasattr(result, "score") and hasattr(result, "findings"):  # the whole draft
        attrs["reviewdesk.score"] = float(result.score)
        attrs["reviewdesk.findings"] = tuple(str(f) for f in result.findings)
        attrs["reviewdesk.cache_hit"] = bool(result.cache_hit)
        if result.failure is not None:
            attrs["error.type"] = str(result.failure.kind)
    else:  # one model answer: one event per HTTP request it took
        for call in calls:
            span.add_event("gen_ai.request", {
                "gen_ai.request.model": call.model_requested,
                "gen_ai.response.model": call.model_reported or "",
                "gen_ai.usage.input_tokens": call.prompt_tokens,
                "gen_ai.usage.output_tokens": call.completion_tokens,
                "reviewdesk.outcome": str(call.outcome),
                "reviewdesk.latency_ms": call.latency_ms,
            })
    span.set_attributes(attrs)
