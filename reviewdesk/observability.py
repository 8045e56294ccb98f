"""Request ids across process boundaries, and in every log line.

The web request's id (RequestContextMiddleware) rides in the headers of every task the
request sends, is restored in the worker before the task runs, and a logging filter puts it on
every record, so one grep follows a submission from the click to the routed draft.
"""
from __future__ import annotations

import logging
import uuid

from celery.signals import before_task_publish, task_postrun, task_prerun, worker_init

from workflows.request_context import request_id_var

HEADER = "reviewdesk_request_id"


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get() or "-"
        return True


@before_task_publish.connect
def _carry_request_id(headers=None, **kwargs):
    request_id = request_id_var.get()
    if headers is not None and request_id:
        headers[HEADER] = request_id


@task_prerun.connect
def _restore_request_id(task=None, **kwargs):
    # A task sent outside any request (beat, the sweep) gets an id of its own.
    inherited = getattr(task.request, HEADER, None) if task is not None else None
    task.request._reviewdesk_token = request_id_var.set(inherited or f"task-{task.request.id or uuid.uuid4().hex}")


@task_postrun.connect
def _forget_request_id(task=None, **kwargs):
    token = getattr(task.request, "_reviewdesk_token", None) if task is not None else None
    if token is not None:
        request_id_var.reset(token)


@worker_init.connect
def _warm_up_pii_detector(**kwargs):
    # Building the PII detector takes about a second (spaCy, Presidio's recognisers); do it
    # before the first task instead of inside it. Forked pool processes inherit it.
    from workflows.pipeline import pii_detect

    try:
        pii_detect.analyzer()
    except Exception:  # the first task will build it (and fail visibly) instead
        logging.getLogger(__name__).warning("PII detector warm-up failed", exc_info=True)


# --- traces (issue 9) ----------------------------------------------------------------------

_tracing_configured = False


def configure_tracing(*, exporter=None) -> bool:
    """Send OpenTelemetry traces of each draft when OTEL_EXPORTER_OTLP_ENDPOINT is set (or an
    ``exporter`` is given, as the tests do); returns whether tracing is on. The exporter is the
    SDK's OTLP/HTTP one, which reads the endpoint and the other OTEL_* variables itself. Spans
    are batched in a background thread, which the SDK restarts in forked pool processes."""
    global _tracing_configured
    from django.conf import settings

    from workflows.pipeline import tracing

    if _tracing_configured:
        return tracing.enabled()
    if exporter is None and not settings.OTEL_EXPORTER_OTLP_ENDPOINT:
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": settings.OTEL_SERVICE_NAME}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracing.use_tracer_provider(provider)
    _tracing_configured = True
    return True


@worker_init.connect
def _start_tracing(**kwargs):
    configure_tracing()
