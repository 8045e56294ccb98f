import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewdesk.settings")
application = get_wsgi_application()

# Traces of the drafts the web process runs itself (the editor's dry run), when configured.
from .observability import configure_tracing  # noqa: E402

configure_tracing()
