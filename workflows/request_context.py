"""Per-request facts (request id, client ip) that audit events carry.

A ContextVar rather than a thread-local so the values are right under ASGI too; Celery tasks
set a request id of their own (the task id).
"""
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("reviewdesk_request_id", default="")
client_ip_var: ContextVar[str | None] = ContextVar("reviewdesk_client_ip", default=None)
# True while a web request is handled (RequestContextMiddleware): work that may wait until the
# response is out (audit.request_chaining's broker message) is deferred to request_finished.
in_web_request_var: ContextVar[bool] = ContextVar("reviewdesk_in_web_request", default=False)
