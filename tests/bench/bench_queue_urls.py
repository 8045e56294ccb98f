"""The app's URLs plus one bare Django view, served by gunicorn for bench_queue.py: the bare
view goes through the same middleware (session, auth, CSP, ...) and returns "ok", the floor a
page of the app is measured against in the same server and run; the bare POST view is Next's
floor (the same middleware and CSRF check, a redirect, no claim)."""
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewdesk.settings")
django.setup()

from django.conf import settings  # noqa: E402  (after setup: the app's URLs import models)
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse, HttpResponseRedirect  # noqa: E402
from django.urls import include, path  # noqa: E402
from django.views.decorators.http import require_POST  # noqa: E402


def bare(request):
    return HttpResponse("ok", content_type="text/plain")


@require_POST
def bare_post(request):
    """Next's floor: a CSRF-checked POST answered with a redirect, as review_next answers."""
    return HttpResponseRedirect("/review/")


urlpatterns = [path("bench/bare/", bare), path("bench/bare-post/", bare_post), path("", include("reviewdesk.urls"))]
settings.ROOT_URLCONF = __name__  # read when the first request resolves
application = get_wsgi_application()
