"""Log formats: one JSON object per line in production, readable lines in development.

Every module logs through the standard library (``logging.getLogger(__name__)``), as Django,
Celery and the libraries do; structlog's ProcessorFormatter turns each record, ours and theirs,
into JSON at the handler. Facts go in ``extra={...}`` and become JSON keys (the model call's
model, outcome, tokens and latency), and the request-id filter (reviewdesk/observability.py)
puts ``request_id`` on every record before it is formatted, so one id follows a web request
into every task it starts and every model call those tasks make.

structlog's own loggers (``structlog.get_logger()``) are configured to end in the same
handlers, so either style gives the same lines.
"""
from __future__ import annotations

import logging

import structlog

PLAIN_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s %(message)s"
FORMATS = ("plain", "json")


def _request_id(logger, method_name, event_dict):
    # The filter has set it on the record; structlog's own loggers read the context var here.
    record = event_dict.get("_record")
    if "request_id" not in event_dict:
        from workflows.request_context import request_id_var

        event_dict["request_id"] = getattr(record, "request_id", None) or request_id_var.get() or "-"
    return event_dict


def _shared_processors() -> list:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        _request_id,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]


def json_formatter() -> logging.Formatter:
    """The handler formatter for REVIEWDESK_LOG_FORMAT=json (the production default)."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
    )


def configure_structlog() -> None:
    """Route structlog's own loggers into the standard library's handlers (and formatters)."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
