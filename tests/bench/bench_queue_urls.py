"""The app's URLs plus one bare Django view, served by gunicorn for bench_queue.py: the bare
view goes through the same middleware (session, auth, CSP, ...) and returns "ok", the floor a
page of the app is measured against in the same server and run; the bare POST view is Next's
floor (the same middleware and CSRF check, a redirect, no claim).

With BENCH_QUEUE_TRACE=<dir> (bench_queue.py --trace) each worker also writes one JSON line
per request to <dir>/<pid>.jsonl: path, wall ms, the thread's CPU ms, SQL ms and statements,
and each statement's ms, so that a slow tail can be told apart: own CPU, waiting on
PostgreSQL, or waiting for a core.
"""
import json
import os
import time

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

if os.environ.get("BENCH_QUEUE_TRACE"):
    from django.db import connection  # noqa: E402

    _django_application = application
    _trace = None

    def application(environ, start_response):  # noqa: F811 - the traced one replaces it
        global _trace
        if _trace is None:
            _trace = open(os.path.join(os.environ["BENCH_QUEUE_TRACE"], f"{os.getpid()}.jsonl"), "a")
        sql: list[float] = []

        def timed(execute, statement, params, many, context):
            t0 = time.perf_counter()
            try:
                return execute(statement, params, many, context)
            finally:
                sql.append((time.perf_counter() - t0) * 1000)

        t0, cpu0 = time.perf_counter(), time.thread_time()
        with connection.execute_wrapper(timed):
            response = _django_application(environ, start_response)
            body = b"".join(response)
        _trace.write(json.dumps({"path": environ["PATH_INFO"], "wall": (time.perf_counter() - t0) * 1000,
                                 "cpu": (time.thread_time() - cpu0) * 1000, "sql": sum(sql), "n": len(sql),
                                 "each": [round(x, 2) for x in sql]}) + "\n")
        _trace.flush()

        class Body(list):
            def close(self):  # after the server wrote it, as for the untraced response
                response.close()

        return Body([body])
