"""The ASGI entry point: what gunicorn's uvicorn workers (docker-compose.yml, Dockerfile) and
`make run` (scripts/dev.sh) serve.

ASGI because of one kind of request: the submission page's server-sent events while a draft is
written (workflows/views/stream.py), an async view that waits on Redis for seconds without
holding a thread. Every other view stays a sync view; Django runs each in a thread of its own
per request (asgiref's thread-sensitive context), so they behave as under WSGI.
(reviewdesk/wsgi.py still works for tools and tests that want WSGI; there the stream view's
events would arrive all at once at the end, and the page's polling carries it.)
"""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewdesk.settings")
application = get_asgi_application()

# Traces of the drafts the web process runs itself (the editor's dry run), when configured.
from .observability import configure_tracing  # noqa: E402

configure_tracing()
