"""`make bench` (part): the review queue with 100,000 open review tasks.

    python -m tests.bench.bench_queue [--tasks 100000] [--clients 20] [--seconds 10] [--claimers 50]

Issue 8, "What must be shown": the queue page p95 with 100,000 open review tasks and 20
concurrent clients (target <= 100 ms, and a number of SQL statements that does not grow with the
table), and Next (services.review_claim_next) p95 with 50 concurrent claimers (target <= 20 ms),
each against a bare baseline measured in the same server and run.

The setup is run_bench.py's (its own database reviewdesk_bench_<pid>, created, migrated, seeded
and dropped; its namespace on Redis db 11). On top of it:

* --tasks open review tasks of customer-reply (70% blocking, 30% async, due times spread over a
  day, a tenth at high priority), each with its own submission and draft, copied with
  INSERT ... SELECT from one made through the ORM (seconds, not minutes);
* the SQL statements of one queue page and one counts poll, counted in this process at 1,000
  open tasks and again at --tasks: the two counts must be equal;
* gunicorn as docker-compose.yml runs it (reviewdesk.wsgi's application, --workers 3, sync,
  production settings) serving the app plus one bare Django view (tests/bench/bench_queue_urls.py:
  the app's URLs and /bench/bare/, a view returning "ok" through the same middleware, session
  and all); --clients threads, each logged in as its own reviewer, request the queue page for
  --seconds, then the bare view the same way. The server's own time per request comes from
  gunicorn's access log (%(D)s, microseconds from the request read to the response written),
  so queueing for a worker in the accept backlog is reported apart (client p95);
* --claimers threads, each its own reviewer with its own database connection, call
  review_claim_next at once, --rounds times; the baseline is the same threads running
  `transaction.atomic(): SELECT 1` (a bare transaction round trip), interleaved. Every claimed
  task is checked to be claimed once.

Not a test: it measures and exits 0 once PostgreSQL and Redis are there, printing MISSED next to
a missed target.
"""
from __future__ import annotations

import argparse
import http.cookiejar
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from tests.bench.run_bench import ROOT, Bench, Proc, pct, say
from tests.bench.run_bench import parse_args as bench_args

PAGE_TARGET_MS = 100.0
CLAIM_TARGET_MS = 20.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="review queue bench (make bench)")
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--seconds", type=float, default=10.0, help="per figure (queue page, counts poll, bare view)")
    p.add_argument("--claimers", type=int, default=50)
    p.add_argument("--rounds", type=int, default=6, help="claims per claimer")
    p.add_argument("--web-workers", type=int, default=3)
    p.add_argument("--keep", action="store_true")
    return p.parse_args(argv)


# --- data ------------------------------------------------------------------------------------


def _columns(cursor, table: str, skip: set[str]) -> list[str]:
    cursor.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
                   [table])
    return [c for (c,) in cursor.fetchall() if c not in skip]


def make_tasks(version, submitter, n: int) -> None:
    """n open review tasks, each with its own submission and draft: one of each made through the
    ORM (tests/labelled.py), then copied n - 1 times by INSERT ... SELECT."""
    from django.db import connection, transaction

    from tests.labelled import open_review_tasks

    (template,) = open_review_tasks(version, submitter, 1)
    if n <= 1:
        return
    with transaction.atomic(), connection.cursor() as c:
        sub_cols = _columns(c, "workflows_submission", {"id"})
        c.execute(f"""INSERT INTO workflows_submission ({", ".join(sub_cols)})
                      SELECT {", ".join(sub_cols)} FROM workflows_submission, generate_series(1, %s)
                      WHERE id = %s""", [n - 1, template.submission_id])
        draft_cols = _columns(c, "workflows_draft", {"id", "submission_id"})
        c.execute(f"""INSERT INTO workflows_draft ({", ".join(draft_cols)}, submission_id)
                      SELECT {", ".join("d." + x for x in draft_cols)}, s.id
                      FROM workflows_draft d, workflows_submission s
                      WHERE d.id = %s AND s.id > %s""", [template.draft_id, template.submission_id])
        task_cols = _columns(c, "workflows_reviewtask",
                             {"id", "submission_id", "draft_id", "lane", "due_at", "priority", "created_at"})
        c.execute(f"""INSERT INTO workflows_reviewtask
                        ({", ".join(task_cols)}, submission_id, draft_id, lane, due_at, priority, created_at)
                      SELECT {", ".join("t." + x for x in task_cols)}, d.submission_id, d.id,
                             CASE WHEN d.id %% 10 < 7 THEN 'blocking_review' ELSE 'async_review' END,
                             now() + (d.id %% 1440) * interval '1 minute',
                             CASE WHEN d.id %% 10 = 3 THEN 1 ELSE 0 END,
                             now() - (d.id %% 600) * interval '1 minute'
                      FROM workflows_reviewtask t, workflows_draft d
                      WHERE t.id = %s AND d.id > %s""", [template.pk, template.draft_id])
    with connection.cursor() as c:
        c.execute("ANALYZE workflows_submission; ANALYZE workflows_draft; ANALYZE workflows_reviewtask")


def make_reviewers(prefix: str, n: int) -> list:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from workflows.roles import REVIEWER

    User = get_user_model()
    users = User.objects.bulk_create([User(username=f"{prefix}{i}", password="!") for i in range(n)])
    for name in (REVIEWER, "support-reviewers"):
        Group.objects.get_or_create(name=name)[0].user_set.add(*users)
    return users


def statements(client, url: str) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, headers={"Host": "localhost"})
    assert response.status_code == 200, (url, response.status_code)
    return len(ctx.captured_queries)


# --- HTTP load ---------------------------------------------------------------------------------


def start_web(bench: Bench, workers: int, logdir: Path) -> tuple[Proc, str]:
    from tests.bench.load import free_port

    port = free_port()
    env = {**os.environ, **bench.common_env(), "PGAPPNAME": "bench-web", "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1",
           "DJANGO_SECURE_COOKIES": "false", "REVIEWDESK_LOG_LEVEL": "WARNING"}
    env.pop("REVIEWDESK_DB_POOL_MAX", None)
    # The driver's key (common_env() makes a new one each call): its sessions must be valid here.
    env["DJANGO_SECRET_KEY"] = os.environ["DJANGO_SECRET_KEY"]
    cmd = [sys.executable, "-m", "gunicorn", "tests.bench.bench_queue_urls:application", "--bind", f"127.0.0.1:{port}",
           "--workers", str(workers), "--access-logfile", str(logdir / "access.log"),
           "--access-logformat", "%(U)s %(s)s %(D)s", "--error-logfile", str(logdir / "gunicorn.log")]
    with open(logdir / "gunicorn.out", "w") as out:
        popen = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    web = Proc("gunicorn", popen, logdir / "gunicorn.log")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if urllib.request.urlopen(urllib.request.Request(url + "/healthz", headers={"Host": "localhost"}),
                                      timeout=2).status == 200:
                return web, url
        except OSError:
            pass
        if popen.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("bench_queue: gunicorn did not start:\n" + (logdir / "gunicorn.log").read_text()[-3000:])
        time.sleep(0.3)


def session_cookie(user) -> str:
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def hammer(base: str, path: str, cookies: list[str], seconds: float, headers=None) -> dict:
    """len(cookies) client threads GET base+path back to back for `seconds`: latencies and errors."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(cookie: str) -> None:
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        while time.monotonic() < stop:
            request = urllib.request.Request(base + path, headers={"Host": "localhost", "Cookie": cookie, **(headers or {})})
            t0 = time.perf_counter()
            try:
                with opener.open(request, timeout=30) as response:
                    response.read()
                    ok = response.status == 200
            except OSError as exc:
                ok, exc_text = False, str(exc)
            took = (time.perf_counter() - t0) * 1000
            with lock:
                if ok:
                    latencies.append(took)
                else:
                    errors.append(exc_text)

    threads = [threading.Thread(target=client, args=(c,)) for c in cookies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"n": len(latencies), "p50": pct(latencies, 0.5), "p95": pct(latencies, 0.95), "errors": errors}


def server_times(logdir: Path, prefix: str, since_line: int) -> tuple[list[float], int]:
    lines = (logdir / "access.log").read_text().splitlines()
    times = []
    for line in lines[since_line:]:
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(prefix) and parts[1] == "200":
            times.append(int(parts[2]) / 1000)
    if lines[since_line:] and not times:
        say(f"  (no {prefix} lines in the access log; first: {lines[since_line]!r})")
    return times, len(lines)


# --- claims ---------------------------------------------------------------------------------------


def claim_round(users, claim: bool) -> tuple[list[float], list[int]]:
    from django.db import connection, connections, transaction

    from workflows import services

    barrier = threading.Barrier(len(users))
    took: list[float] = []
    claimed: list[int] = []
    lock = threading.Lock()

    def run(user) -> None:
        try:
            connection.ensure_connection()
            barrier.wait()
            t0 = time.perf_counter()
            if claim:
                task = services.review_claim_next(user=user)
            else:
                with transaction.atomic(), connection.cursor() as c:
                    c.execute("SELECT 1")
                task = None
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                took.append(ms)
                if task is not None:
                    claimed.append(task.pk)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return took, claimed


# --- main -----------------------------------------------------------------------------------------


def main(argv=None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    # run_bench's setup, with a driver pool big enough for every claimer to hold a connection.
    bench = Bench(bench_args(["--driver-pool", str(a.claimers + 4), "--creators", "1"]
                             + (["--keep"] if a.keep else [])))
    web = None
    try:
        t0 = time.monotonic()
        bench.setup()
        from tests.bench.load import LoadBench

        LoadBench.collectstatic(None)  # production settings render {% static %} from the manifest
        from django.test import Client

        reviewers = make_reviewers(f"q{bench.pid}r", max(a.clients, a.claimers))
        make_tasks(bench.version, bench.user, 1000)
        probe = Client()
        probe.force_login(reviewers[0])
        small = {"page": statements(probe, "/review/"), "counts": statements(probe, "/review/counts/?lane=blocking_review")}
        make_tasks(bench.version, bench.user, a.tasks - 1000)
        large = {"page": statements(probe, "/review/"), "counts": statements(probe, "/review/counts/?lane=blocking_review")}
        from workflows.models import ReviewTask

        open_tasks = ReviewTask.objects.open().count()
        say(f"{open_tasks:,} open review tasks ready in {time.monotonic() - t0:.1f} s")
        from django.db import connection

        from workflows import selectors

        qs = selectors.queue_tasks(reviewers[0], selectors.QueueFilters())[:51]
        plan = qs.explain()
        say("queue page plan: " + " | ".join(line.strip() for line in plan.splitlines()[:6]))
        from django.db.models import Q
        from django.utils import timezone

        nxt = (selectors.queue_scope(reviewers[0])
               .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=timezone.now()))
               .order_by(*selectors.QUEUE_ORDER).values("pk")[:1])
        say("Next plan: " + " | ".join(line.strip() for line in nxt.explain().splitlines()[:6]))

        web, base = start_web(bench, a.web_workers, bench.logdir)
        cookies = [session_cookie(u) for u in reviewers[: a.clients]]
        hammer(base, "/review/", cookies[:3], 1.0)  # warm the workers
        _, mark = server_times(bench.logdir, "/", 0)
        page = hammer(base, "/review/", cookies, a.seconds)
        page_server, mark = server_times(bench.logdir, "/review/", mark)
        counts = hammer(base, "/review/counts/?lane=blocking_review", cookies, a.seconds / 2, {"HX-Request": "true"})
        counts_server, mark = server_times(bench.logdir, "/review/counts/", mark)
        bare = hammer(base, "/bench/bare/", cookies, a.seconds)
        bare_server, mark = server_times(bench.logdir, "/bench/bare/", mark)
        web.stop(timeout=5)
        web = None

        claims, bare_tx, claimed = [], [], []
        for _ in range(a.rounds):
            took, got = claim_round(reviewers[: a.claimers], claim=True)
            claims += took
            claimed += got
            took, _ = claim_round(reviewers[: a.claimers], claim=False)
            bare_tx += took
        # One claimer alone, for scale: what a claim costs without anyone to wait for.
        alone = []
        for user in reviewers[: a.claimers]:
            took, got = claim_round([user], claim=True)
            alone += took
            claimed += got
        double = len(claimed) - len(set(claimed))
        connection.close()

        def row(name, value, baseline, target=None):
            verdict = "" if target is None else ("pass" if value <= target else "MISSED")
            say(f"  {name:<46} {value:>9.1f} {baseline:>9.1f} {'' if target is None else f'<= {target:g}':>9} {verdict}")

        say("")
        say(f"review queue, {open_tasks:,} open tasks; gunicorn --workers {a.web_workers} (sync); "
            f"{a.clients} clients for {a.seconds:g} s; {a.claimers} claimers x {a.rounds} rounds")
        say(f"  {'figure (ms)':<46} {'ReviewDesk':>9} {'bare':>9} {'target':>9}")
        row("queue page p95, server time", pct(page_server, 0.95), pct(bare_server, 0.95), PAGE_TARGET_MS)
        row("queue page p50, server time", pct(page_server, 0.5), pct(bare_server, 0.5))
        row("queue page p95, client (incl. waiting for a worker)", page["p95"], bare["p95"])
        row("counts poll p95, server time", pct(counts_server, 0.95), pct(bare_server, 0.95))
        row("Next (claim) p95, 50 at once", pct(claims, 0.95), pct(bare_tx, 0.95), CLAIM_TARGET_MS)
        row("Next (claim) p50", pct(claims, 0.5), pct(bare_tx, 0.5))
        row("Next (claim) p95, one claimer at a time", pct(alone, 0.95), float("nan"))
        say(f"  requests: queue {page['n']} ({len(page['errors'])} errors), counts {counts['n']} "
            f"({len(counts['errors'])} errors), bare {bare['n']} ({len(bare['errors'])} errors)")
        grows = small != large
        say(f"  SQL statements per request at 1,000 / {open_tasks:,} open tasks: page {small['page']} / {large['page']}, "
            f"counts poll {small['counts']} / {large['counts']}  {'MISSED (grows with the table)' if grows else 'pass'}")
        expected = a.claimers * (a.rounds + 1)
        say(f"  claims: {len(claimed)} of {expected}, double claims {double}"
            f"  {'pass' if double == 0 and len(claimed) == expected else 'MISSED'}")
        return 0
    finally:
        if web is not None:
            web.stop(timeout=5)
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
