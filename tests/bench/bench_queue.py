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
* gunicorn with docker-compose.yml's worker count and production settings, serving the app
  through WSGI (--workers 3, sync; compose serves the same views through ASGI for the draft
  stream, where a sync view also runs one at a time per worker; WSGI here because gunicorn's
  access log then gives the server's own time per request; tests/bench/load.py runs ASGI as
  compose does) plus one bare Django view (tests/bench/bench_queue_urls.py:
  the app's URLs and /bench/bare/, a view returning "ok" through the same middleware, session
  and all); --clients threads, each logged in as its own reviewer, request the queue page for
  --seconds, then the bare view the same way. The server's own time per request comes from
  gunicorn's access log (%(D)s, microseconds from the request read to the response written),
  so queueing for a worker in the accept backlog is reported apart (client p95);
* Next through the same server: --claimers threads, each logged in as its own reviewer, press
  the Next button (POST /review/next/, CSRF and all, the redirect not followed) at the same
  instant (a barrier), --rounds times; after each round the same threads post at once to a bare
  POST view (the same middleware and CSRF check, a redirect, no claim). Server time from the
  access log as for the page; the client's time, which includes waiting for one of the
  --web-workers, is printed beside it. Then each reviewer alone, for scale. Every claimed task
  (the id in the redirect) is checked to be claimed once, and against the database (one audit
  event and one leased task per claim).

Not a test: it measures and exits 0 once PostgreSQL and Redis are there, printing MISSED next to
a missed target.
"""
from __future__ import annotations

import argparse
import http.client
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
    p.add_argument("--trace", action="store_true",
                   help="per request CPU / SQL split of Next and the bare POST (bench_queue_urls.py)")
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
        # VACUUM as well: 100,000 fresh inserts per table would otherwise set autovacuum going
        # in the middle of the measurement (insert-triggered vacuum, PostgreSQL 13+), and a
        # queue that has been running for a while is vacuumed.
        for table in ("workflows_submission", "workflows_draft", "workflows_reviewtask"):
            c.execute(f"VACUUM (ANALYZE) {table}")


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


def start_web(bench: Bench, workers: int, logdir: Path, trace: bool = False) -> tuple[Proc, str]:
    from tests.bench.load import free_port

    port = free_port()
    env = {**os.environ, **bench.common_env(), "PGAPPNAME": "bench-web", "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1",
           "DJANGO_SECURE_COOKIES": "false", "REVIEWDESK_LOG_LEVEL": "WARNING"}
    env.pop("REVIEWDESK_DB_POOL_MAX", None)
    # The driver's key (common_env() makes a new one each call): its sessions must be valid here.
    env["DJANGO_SECRET_KEY"] = os.environ["DJANGO_SECRET_KEY"]
    if trace:
        (logdir / "trace").mkdir(exist_ok=True)
        env["BENCH_QUEUE_TRACE"] = str(logdir / "trace")
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


def server_times(logdir: Path, prefix: str, since_line: int, status: str = "200") -> tuple[list[float], int]:
    lines = (logdir / "access.log").read_text().splitlines()
    times = []
    for line in lines[since_line:]:
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(prefix) and parts[1] == status:
            times.append(int(parts[2]) / 1000)
    if lines[since_line:] and not times:
        say(f"  (no {prefix} lines in the access log; first: {lines[since_line]!r})")
    return times, len(lines)


# --- claims ---------------------------------------------------------------------------------------

# Any 32-character secret is a valid CSRF cookie and, sent back in the header, its token.
CSRF_SECRET = "benchbenchbenchbenchbenchbench12"


def press_next(base: str, cookie: str, path: str = "/review/next/",
               conn: http.client.HTTPConnection | None = None) -> tuple[int, str, float]:
    """One POST of the Next button (not following the redirect): status, Location, client ms.
    With ``conn`` (connected already) the time is the request's, not the TCP handshake's."""
    if conn is None:
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
    t0 = time.perf_counter()
    try:
        conn.request("POST", path, body="", headers={
            "Host": "localhost", "Cookie": f"{cookie}; csrftoken={CSRF_SECRET}", "X-CSRFToken": CSRF_SECRET,
            "Content-Type": "application/x-www-form-urlencoded", "Content-Length": "0"})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Location") or "", (time.perf_counter() - t0) * 1000
    finally:
        conn.close()


def claim_round(base: str, cookies: list[str], path: str) -> tuple[list[float], list[int], list[str]]:
    """Every reviewer presses Next at the same instant (a barrier): client latencies, the task
    ids their redirects name, and anything that was not a redirect."""
    barrier = threading.Barrier(len(cookies))
    took: list[float] = []
    claimed: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    host, port = base.removeprefix("http://").split(":")

    def run(cookie: str) -> None:
        # The clients stand in for reviewers' browsers on other machines, yet share this one's
        # 2 cores with the server: each connects before the barrier (50 handshakes at once are
        # client work) and runs at a lower priority (nice 10), so the server's own time is what
        # the access log measures, for Next and the bare POST alike.
        os.setpriority(os.PRIO_PROCESS, 0, 10)  # this thread only (Linux)
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.connect()
        except OSError as exc:
            with lock:
                errors.append(str(exc))
            barrier.abort()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:  # another client could not connect: no round
            conn.close()
            return
        try:
            status, location, ms = press_next(base, cookie, path, conn)
        except OSError as exc:
            with lock:
                errors.append(str(exc))
            return
        with lock:
            took.append(ms)
            if status != 302:
                errors.append(f"{status} {location}")
            elif path == "/review/next/":
                if location.rstrip("/").split("/")[-1].isdigit():
                    claimed.append(int(location.rstrip("/").split("/")[-1]))
                else:
                    errors.append(f"nothing claimed: {location}")

    threads = [threading.Thread(target=run, args=(c,)) for c in cookies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.3)  # gunicorn writes the access line after the response: let the last ones land
    return took, claimed, errors


def print_trace(tracedir: Path) -> None:
    """Where Next's and the bare POST's server time went (--trace): the middle fifth of the
    requests by wall time and the slowest twentieth, each split into the worker's own CPU, the
    time its SQL took (PostgreSQL's work and waiting for it) and the rest (waiting for a core)."""
    import json

    rows = [json.loads(line) for f in tracedir.glob("*.jsonl") for line in f.read_text().splitlines()]
    say("  trace (ms, averages)                     wall    cpu    sql  statements")
    for path in ("/review/next/", "/bench/bare-post/"):
        ranked = sorted((r for r in rows if r["path"] == path), key=lambda r: r["wall"])
        n = len(ranked)
        for name, band in (("middle fifth", ranked[int(n * .4):int(n * .6)]), ("slowest 5%", ranked[int(n * .95):])):
            if band:
                avg = {k: sum(r[k] for r in band) / len(band) for k in ("wall", "cpu", "sql", "n")}
                say(f"  {path:<18} {name:<13} {avg['wall']:8.1f} {avg['cpu']:6.1f} {avg['sql']:6.1f} {avg['n']:6.1f}")


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

        # Write out the dirty pages now (the 100,000 tasks just seeded and, in `make bench`, the
        # million audit events of the benches before this one), not during the measurement.
        try:
            with connection.cursor() as c:
                c.execute("CHECKPOINT")
        except Exception as exc:  # noqa: BLE001 - needs superuser or pg_checkpoint: measure anyway
            say(f"(no CHECKPOINT before measuring: {exc})")
        web, base = start_web(bench, a.web_workers, bench.logdir, a.trace)
        cookies = [session_cookie(u) for u in reviewers[: a.clients]]
        hammer(base, "/review/", cookies[:3], 1.0)  # warm the workers
        _, mark = server_times(bench.logdir, "/", 0)
        page = hammer(base, "/review/", cookies, a.seconds)
        page_server, mark = server_times(bench.logdir, "/review/", mark)
        counts = hammer(base, "/review/counts/?lane=blocking_review", cookies, a.seconds / 2, {"HX-Request": "true"})
        counts_server, mark = server_times(bench.logdir, "/review/counts/", mark)
        bare = hammer(base, "/bench/bare/", cookies, a.seconds)
        bare_server, mark = server_times(bench.logdir, "/bench/bare/", mark)

        # Next through the same server: --claimers reviewers press it at once, --rounds times,
        # each round followed by the same reviewers posting to the bare POST view at once.
        claimers = [session_cookie(u) for u in reviewers[: a.claimers]]
        press_next(base, claimers[0], "/bench/bare-post/")  # (a worker's first POST)
        claims, bare_post, claimed, claim_errors = [], [], [], []
        claims_server, bare_post_server = [], []
        for _ in range(a.rounds):
            took, got, errors = claim_round(base, claimers, "/review/next/")
            claims += took
            claimed += got
            claim_errors += errors
            times, mark = server_times(bench.logdir, "/review/next/", mark, status="302")
            claims_server += times
            took, _, errors = claim_round(base, claimers, "/bench/bare-post/")
            bare_post += took
            claim_errors += errors
            times, mark = server_times(bench.logdir, "/bench/bare-post/", mark, status="302")
            bare_post_server += times
        # One reviewer at a time, for scale: what a claim costs without anyone to wait for.
        alone = []
        for cookie in claimers:
            took, got, errors = claim_round(base, [cookie], "/review/next/")
            claimed += got
            claim_errors += errors
            times, mark = server_times(bench.logdir, "/review/next/", mark, status="302")
            alone += times
        web.stop(timeout=5)
        web = None
        double = len(claimed) - len(set(claimed))
        # What the database says: every claim by Next is one audit event and one leased task.
        from workflows.models import AuditEvent

        events = AuditEvent.objects.filter(action="review.claimed", payload__next=True).count()
        leased = ReviewTask.objects.filter(claimed_by__in=reviewers[: a.claimers]).count()
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
        row(f"Next p95, {a.claimers} at once, server time", pct(claims_server, 0.95), pct(bare_post_server, 0.95),
            CLAIM_TARGET_MS)
        row(f"Next p50, {a.claimers} at once, server time", pct(claims_server, 0.5), pct(bare_post_server, 0.5))
        row("Next p95, client (incl. waiting for a worker)", pct(claims, 0.95), pct(bare_post, 0.95))
        row("Next p95, one reviewer at a time, server time", pct(alone, 0.95), float("nan"))
        say(f"  requests: queue {page['n']} ({len(page['errors'])} errors), counts {counts['n']} "
            f"({len(counts['errors'])} errors), bare {bare['n']} ({len(bare['errors'])} errors)")
        grows = small != large
        say(f"  SQL statements per request at 1,000 / {open_tasks:,} open tasks: page {small['page']} / {large['page']}, "
            f"counts poll {small['counts']} / {large['counts']}  {'MISSED (grows with the table)' if grows else 'pass'}")
        expected = a.claimers * (a.rounds + 1)
        ok = double == 0 and len(claimed) == expected == events == leased and not claim_errors
        say(f"  claims: {len(claimed)} of {expected} (audit events {events}, leased tasks {leased}), "
            f"double claims {double}, errors {len(claim_errors)}  {'pass' if ok else 'MISSED'}")
        for error in claim_errors[:5]:
            say(f"    {error}")
        if a.trace:
            print_trace(bench.logdir / "trace")
        return 0
    finally:
        if web is not None:
            web.stop(timeout=5)
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
