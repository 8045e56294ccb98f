"""The app's URLs plus one bare Django view, served by gunicorn for bench_queue.py: the bare
view goes through the same middleware (session, auth, CSP, ...) and returns "ok", the floor a
page of the app is measured against in the same server and run."""
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewdesk.settings")
django.setup()

from django.conf import settings  # noqa: E402  (after setup: the app's URLs import models)
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import include, path  # noqa: E402


def bare(request):
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [path("bench/bare/", bare), path("", include("reviewdesk.urls"))]
settings.ROOT_URLCONF = __name__  # read when the first request resolves
application = get_wsgi_application()
