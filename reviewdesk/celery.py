"""The Celery app. Configuration lives in Django settings under the CELERY_ prefix."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewdesk.settings")

app = Celery("reviewdesk")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

from . import observability  # noqa: E402,F401  (connects the request-id signal handlers)
