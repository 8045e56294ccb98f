"""Where the queue page's server time goes (a diagnostic beside bench_queue.py, not a test).

    python -m tests.bench.profile_queue_page [--tasks 100000] [--requests 200] [--cprofile 40]

In its own database (bench_queue's setup: reviewdesk_bench_<pid>, created, seeded and dropped),
with --tasks open review tasks made by bench_queue.make_tasks, one reviewer requests /review/
and /review/counts/ through Django's test client (the whole middleware stack, production
settings) and this prints:

* each SQL statement of one page and one poll, with its time inside the request and the
  EXPLAIN (ANALYZE, BUFFERS) summary (plan shape, planning and execution time);
* the page's time split: total, SQL, template rendering, the rest (p50/p95 over --requests);
* a cProfile of --cprofile page requests, the top functions by cumulative and own time.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time

from tests.bench.run_bench import Bench, pct, say
from tests.bench.run_bench import parse_args as bench_args


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="profile the review queue page")
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--cprofile", type=int, default=40)
    p.add_argument("--keep", action="store_true", help="keep the database (for EXPLAIN by hand)")
    p.add_argument("--path", action="append", default=[], help="extra paths to time (e.g. '/review/?lane=async_review')")
    return p.parse_args(argv)


def bare(request):
    from django.http import HttpResponse

    return HttpResponse("ok", content_type="text/plain")


def _urlpatterns():
    from django.urls import include, path

    return [path("bench/bare/", bare), path("", include("reviewdesk.urls"))]


def __getattr__(name):  # the URLconf the bare view is timed with (imported after django.setup())
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)


class Timer:
    """An execute_wrapper: every statement of a request with its wall time."""

    def __init__(self):
        self.rows: list[tuple[float, str, tuple]] = []

    def __call__(self, execute, sql, params, many, context):
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.rows.append(((time.perf_counter() - t0) * 1000, sql, params))


def explain(sql: str, params) -> str:
    from django.db import connection

    if not sql.lstrip().upper().startswith("SELECT"):
        return "(not a SELECT)"
    with connection.cursor() as c:
        c.execute("EXPLAIN (ANALYZE, BUFFERS, SUMMARY) " + sql, params)
        lines = [r[0] for r in c.fetchall()]
    shape = [ln.strip() for ln in lines if "->" in ln or not ln.startswith(" ")][:8]
    tail = [ln.strip() for ln in lines if ln.startswith(("Planning Time", "Execution Time"))]
    return " | ".join(shape) + "\n        " + ", ".join(tail)


def statements_of(client, path: str, headers=None) -> None:
    from django.db import connection

    timer = Timer()
    with connection.execute_wrapper(timer):
        response = client.get(path, headers={"Host": "localhost", **(headers or {})})
    assert response.status_code == 200, response.status_code
    say(f"\n{path}: {len(timer.rows)} statements, {sum(r[0] for r in timer.rows):.1f} ms of SQL, "
        f"{len(response.content)} bytes")
    for ms, sql, params in timer.rows:
        say(f"  {ms:6.2f} ms  {sql[:220]}")
        say(f"        {explain(sql, params)}")


def backend_cpu() -> float:
    """Seconds of CPU this connection's PostgreSQL backend has used (/proc, same machine): with
    the process's own CPU time, a figure that other load on a shared machine barely moves."""
    from django.db import connection

    with connection.cursor() as c:
        c.execute("SELECT pg_backend_pid()")
        (pid,) = c.fetchone()
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def split(client, path: str, n: int, headers=None) -> None:
    """p50/p95 of the whole request, its SQL, and its template rendering, over n requests."""
    from django.db import connection
    from django.template import Template

    rendering: list[float] = []
    original = Template.render

    def timed_render(self, context):
        # Only the outermost render (the page template), not {% include %}s inside it.
        if getattr(timed_render, "depth", 0):
            return original(self, context)
        timed_render.depth = 1
        t0 = time.perf_counter()
        try:
            return original(self, context)
        finally:
            timed_render.depth = 0
            rendering.append((time.perf_counter() - t0) * 1000)

    total, sql = [], []
    Template.render = timed_render
    client.get(path, headers={"Host": "localhost", **(headers or {})})  # the connection is open
    backend = backend_cpu()
    cpu = time.process_time()
    try:
        for _ in range(n):
            timer = Timer()
            t0 = time.perf_counter()
            with connection.execute_wrapper(timer):
                client.get(path, headers={"Host": "localhost", **(headers or {})})
            total.append((time.perf_counter() - t0) * 1000)
            sql.append(sum(r[0] for r in timer.rows))
    finally:
        Template.render = original
    cpu = (time.process_time() - cpu) * 1000 / n
    backend = (backend_cpu() - backend) * 1000 / n
    say(f"\n{path} x{n}: CPU a request: {cpu:.1f} ms Python + {backend:.1f} ms PostgreSQL backend; "
        f"total p50 {pct(total, .5):.1f} p95 {pct(total, .95):.1f} ms; "
        f"SQL p50 {pct(sql, .5):.1f} p95 {pct(sql, .95):.1f} ms; "
        f"render p50 {pct(rendering, .5):.1f} p95 {pct(rendering, .95):.1f} ms")


def main(argv=None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    bench = Bench(bench_args(["--creators", "1"] + (["--keep"] if a.keep else [])))
    try:
        bench.setup()
        from tests.bench.load import LoadBench

        LoadBench.collectstatic(None)
        from django.test import Client

        from tests.bench.bench_queue import make_reviewers, make_tasks

        (reviewer,) = make_reviewers(f"p{bench.pid}r", 1)
        t0 = time.monotonic()
        make_tasks(bench.version, bench.user, a.tasks)
        say(f"{a.tasks:,} tasks in {time.monotonic() - t0:.1f} s")
        client = Client()
        client.force_login(reviewer)
        paths = ["/review/", "/review/?lane=async_review", *a.path]
        for path in paths:
            client.get(path, headers={"Host": "localhost"})  # warm caches, templates, connections
        for path in paths:
            statements_of(client, path)
        statements_of(client, "/review/counts/?lane=blocking_review&shown=99", {"HX-Request": "true"})
        for path in paths:
            split(client, path, a.requests)
        split(client, "/review/counts/?lane=blocking_review&shown=99", a.requests, {"HX-Request": "true"})
        from django.test import override_settings

        with override_settings(ROOT_URLCONF="tests.bench.profile_queue_page"):
            split(client, "/bench/bare/", a.requests)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(a.cprofile):
            client.get("/review/", headers={"Host": "localhost"})
        profiler.disable()
        for key in ("cumulative", "tottime"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(35)
            say(f"\ncProfile of {a.cprofile} pages, by {key}:\n" + out.getvalue().split("\n", 6)[-1])
        return 0
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
