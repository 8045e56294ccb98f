import uuid

from .request_context import client_ip_var, in_web_request_var, request_id_var


class RequestContextMiddleware:
    """Gives every request an id (honouring an inbound X-Request-ID) for logs and audit events."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        inbound = request.headers.get("X-Request-ID", "")
        request_id = inbound[:64] if inbound.isprintable() and inbound else uuid.uuid4().hex
        request.request_id = request_id
        # REMOTE_ADDR only: X-Forwarded-For is spoofable unless a trusted proxy sets it.
        rid_token = request_id_var.set(request_id)
        ip_token = client_ip_var.set(request.META.get("REMOTE_ADDR") or None)
        web_token = in_web_request_var.set(True)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(rid_token)
            client_ip_var.reset(ip_token)
            in_web_request_var.reset(web_token)
        response["X-Request-ID"] = request_id
        return response
