"""`make bench-load`: ReviewDesk under load, through gunicorn, with locust.

    python -m tests.bench.load [--steps 0.5,1,2,3,4,6] [--step-seconds 20] [--spike-seconds 60] ...

Not a test (pytest never collects it); it measures and exits 0 once the services are there.
tests/integration/test_load_bench.py runs it for a few seconds at a tiny rate (--smoke) so it
cannot rot.

The setup is run_bench.py's (Bench.setup, start_workers, cleanup): its own database
reviewdesk_bench_<pid> (created, migrated, seeded, dropped), Redis db 11 (BENCH_REDIS_URL) with
REVIEWDESK_NAMESPACE=bench<pid>., the fake OpenAI-compatible model server in its own process
(answering after --model-delay seconds; --review-share of its answers uncertain enough to land
in the blocking review lane), and the Celery workers as docker-compose.yml starts them
(-P threads -c 200, two processes). On top of it:

* gunicorn as docker-compose.yml runs it (reviewdesk.asgi, uvicorn workers, --workers 3, access log), with
  production settings (DEBUG off, static files collected) on a loopback port;
* --reviewers reviewer accounts and --submitters submitter accounts;
* locust (tests/bench/locustfile.py) in its own process, headless: everyone logs in (the
  warm-up), then submissions at a rising rate (--steps, --step-seconds each) while the
  reviewers work the queues, then a gap in which this driver judges the steps and writes the
  spike rate (--spike-factor x the highest sustained rate), then the spike (--spike-seconds);
* a sampler, every second: CPU per process group (web, each worker, the model server, locust),
  of the bench database's PostgreSQL backends and of redis-server, from /proc; PostgreSQL
  connections to the bench database by application; the llm queue's length in Redis; the
  backlog in the database (submissions still submitted or generating).

A step is sustained when it had no 5xx and no failed request or wizard, at least 90% of the
offered rate was achieved (submissions whose wizard started in the step), the p95 of its page
requests (all but the log-ins) stayed within --max-p95 ms, and the step's submissions were
drafted within --max-lag seconds (p95, created -> routed or failed). At the end, after the queue drains: every
submission locust saw created is in the database and either routed (routed, approved,
rejected, regenerating) or failed with a reason; nothing is left submitted or generating.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from pathlib import Path

from tests.bench.run_bench import (
    ROOT,
    Bench,
    PgSampler,
    Proc,
    machine_cpu,
    model_control,
    named_cpu,
    pct,
    pids_cpu,
    say,
)
from tests.bench.run_bench import (
    parse_args as bench_parse_args,
)

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
PASSWORD = "load-bench-password"
ROUTED_STATES = ("routed", "approved", "rejected", "regenerating")
PENDING_STATES = ("submitted", "generating")
SUSTAIN_SHARE = 0.9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                raw = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            if int(raw[raw.rindex(")") + 2:].split()[2]) == pgid:
                pids.append(int(entry.name))
    return pids


class Sampler(threading.Thread):
    """Once a second: CPU seconds per process (by component), PostgreSQL connections, queue
    length in Redis and the backlog in the database."""

    def __init__(self, load: LoadBench):
        super().__init__(daemon=True, name="load-sampler")
        self.load = load
        self.rows: list[dict] = []
        self.stop_event = threading.Event()

    def groups(self) -> dict[str, int]:
        out = {"web": self.load.web.pid, "model": self.load.bench.model.pid}
        for i, w in enumerate(self.load.bench.workers, 1):
            out[f"worker{i}"] = w.pid
        if self.load.locust:
            out["locust"] = self.load.locust.pid
        return out

    def run(self) -> None:
        import psycopg

        bench = self.load.bench
        llm, default = bench.queues()
        r = bench.redis()
        with psycopg.connect(bench.db_url, autocommit=True, application_name="bench-listener-load") as conn:
            while not self.stop_event.is_set():
                t = time.time()
                cpu = {name: pids_cpu(group_pids(pgid)) for name, pgid in self.groups().items()}
                pg_pids = {pid for s in bench.sampler.samples[-40:] for pid in s.backend_pids}
                cpu["postgres"] = pids_cpu(pg_pids)
                backlog = conn.execute(
                    "SELECT count(*) FROM workflows_submission s JOIN auth_user u ON u.id = s.submitted_by_id "
                    "WHERE s.state IN ('submitted', 'generating') AND u.username LIKE %s",
                    [self.load.submitter_prefix + "%"]).fetchone()[0]
                with r.pipeline() as pipe:
                    for q in (llm, default):
                        for suffix in ("", "\x06\x163", "\x06\x166", "\x06\x169"):
                            pipe.llen(q + suffix)
                    lens = pipe.execute()
                last = bench.sampler.samples[-1] if bench.sampler.samples else None
                self.rows.append({
                    "t": t, "cpu": cpu, "redis": named_cpu("redis-server"), "machine": machine_cpu(),
                    "backlog": backlog, "llm_queue": sum(lens[:4]), "default_queue": sum(lens[4:]),
                    "pg_conns": last.counted if last else 0, "pg_by_app": dict(last.by_app) if last else {},
                })
                self.stop_event.wait(1.0)

    def window(self, start: float, end: float) -> dict:
        """CPU (in cores: 1.0 = one core busy) per component over [start, end], and maxima."""
        rows = [row for row in self.rows if start - 0.5 <= row["t"] <= end + 0.5]
        if len(rows) < 2:
            return {}
        first, last = rows[0], rows[-1]
        wall = last["t"] - first["t"]
        cores: dict[str, float] = {}
        busiest: dict[str, float] = {}
        for name, per_pid in last["cpu"].items():
            before = first["cpu"].get(name, {})
            deltas = {pid: v - before.get(pid, 0.0) for pid, v in per_pid.items()}
            cores[name] = sum(deltas.values()) / wall
            busiest[name] = max(deltas.values(), default=0.0) / wall
        cores["redis"] = (last["redis"] - first["redis"]) / wall
        (b0, t0, _), (b1, t1, _) = first["machine"], last["machine"]
        ncpu = os.cpu_count() or 1
        machine_cores = (last["machine"][0] - first["machine"][0]) / wall if wall else 0.0
        return {
            "wall": wall, "cores": cores, "busiest": busiest,
            # Everything else on the machine (other helpers' test runs, PostgreSQL's background
            # processes, the kernel): what this bench's processes could not have.
            "others": max(0.0, machine_cores - sum(cores.values())),
            "machine_busy": (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0,
            "machine_cores": (b1 - b0) / wall if wall else 0.0, "ncpu": ncpu,
            "pg_conns": max(row["pg_conns"] for row in rows),
            "llm_queue": max(row["llm_queue"] for row in rows),
            "backlog": max(row["backlog"] for row in rows),
            "backlog_end": rows[-1]["backlog"],
        }


class LoadBench:
    def __init__(self, args):
        self.args = args
        worker_args = ["--workers", str(args.workers), "--concurrency", str(args.concurrency),
                       "--model-delay", str(args.model_delay)] + (["--keep"] if args.keep else [])
        self.bench = Bench(bench_parse_args(worker_args))
        self.web: Proc | None = None
        self.locust: Proc | None = None
        self.sampler: Sampler | None = None
        self.web_url = ""
        self.reviewer_prefix = f"load{self.bench.pid}r"
        self.submitter_prefix = f"load{self.bench.pid}s"
        self.logdir = self.bench.logdir
        self.results_path = self.logdir / "locust-results.json"
        self.control_path = self.logdir / "locust-control.json"

    # --- setup ---

    def collectstatic(self) -> None:
        """Production settings serve static files through whitenoise's manifest, as the image
        does after its collectstatic; a lock keeps two benches from writing at once. Skipped
        when the manifest is newer than every source file (it takes half a minute on a busy
        machine: whitenoise compresses every file again)."""
        env = {**os.environ}
        manifest = ROOT / "staticfiles" / "staticfiles.json"
        lock_path = Path(tempfile.gettempdir()) / f"reviewdesk-collectstatic-{zlib.crc32(str(ROOT).encode())}.lock"
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            newest = max((f.stat().st_mtime for f in (ROOT / "static").rglob("*") if f.is_file()), default=0.0)
            if manifest.exists() and manifest.stat().st_mtime >= newest:
                return
            subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"], cwd=ROOT, env=env,
                           check=True, stdout=subprocess.DEVNULL)

    def create_users(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.hashers import make_password
        from django.contrib.auth.models import Group

        from workflows.roles import REVIEWER, SUBMITTER

        a = self.args
        User = get_user_model()
        # One hash for all (the default hasher, so each login costs what a real one does).
        password = make_password(PASSWORD)
        reviewers = User.objects.bulk_create(
            [User(username=f"{self.reviewer_prefix}{i}", password=password) for i in range(1, a.reviewers + 1)])
        submitters = User.objects.bulk_create(
            [User(username=f"{self.submitter_prefix}{i}", password=password) for i in range(1, a.submitters + 1)])
        for name, users in ((REVIEWER, reviewers), ("support-reviewers", reviewers), (SUBMITTER, submitters)):
            Group.objects.get_or_create(name=name)[0].user_set.add(*users)

    def start_web(self) -> None:
        a = self.args
        port = free_port()
        self.web_url = f"http://127.0.0.1:{port}"
        env = {**os.environ, **self.bench.common_env(), "PGAPPNAME": "bench-web",
               "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1",
               # Plain HTTP on loopback: no TLS proxy in front, so no secure-only cookies.
               "DJANGO_SECURE_COOKIES": "false", "REVIEWDESK_LOG_LEVEL": "WARNING"}
        env.pop("REVIEWDESK_DB_POOL_MAX", None)  # the web's default, as docker-compose.yml leaves it
        for name in a.web_env:
            key, _, value = name.partition("=")
            env[key] = value
        cmd = [sys.executable, "-m", "gunicorn", "reviewdesk.asgi:application",
               "--worker-class", "uvicorn.workers.UvicornWorker", "--bind", f"127.0.0.1:{port}",
               "--workers", str(a.web_workers), "--keep-alive", "65",  # as docker-compose.yml
               "--access-logfile", str(self.logdir / "access.log"),
               "--error-logfile", str(self.logdir / "gunicorn.log")]
        with open(self.logdir / "gunicorn.out", "w") as out:
            popen = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.web = Proc("gunicorn", popen, self.logdir / "gunicorn.log")

    def wait_web(self) -> None:
        a = self.args
        popen = self.web.popen
        deadline = time.monotonic() + 90
        while True:
            try:
                request = urllib.request.Request(self.web_url + "/healthz", headers={"Host": "localhost"})
                if urllib.request.urlopen(request, timeout=2).status == 200:
                    break
            except OSError:
                pass
            if popen.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("load: gunicorn did not start:\n"
                                 + (self.logdir / "gunicorn.log").read_text(errors="replace")[-3000:])
            time.sleep(0.3)
        say(f"gunicorn up on {self.web_url}: --workers {a.web_workers} (uvicorn, ASGI), production settings")

    def locust_config(self) -> dict:
        a = self.args
        return {
            "reviewers": a.reviewers, "submitters": a.submitters, "password": PASSWORD,
            "reviewer_prefix": self.reviewer_prefix, "submitter_prefix": self.submitter_prefix,
            "warmup": a.warmup, "steps": [[rate, a.step_seconds] for rate in a.steps], "gap": a.gap,
            "spike_seconds": a.spike_seconds, "results": str(self.results_path),
            "control": str(self.control_path), "think": a.think, "step_think": a.step_think, "poll": a.poll,
            "status_polls": a.status_polls, "slug": "customer-reply", "request_timeout": a.request_timeout,
        }

    def start_locust(self) -> None:
        config_path = self.logdir / "locust-config.json"
        config = self.locust_config()
        config_path.write_text(json.dumps(config))
        env = {**os.environ, "LOAD_CONFIG": str(config_path)}
        for key in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL"):
            env.pop(key, None)  # locust is a client: nothing of Django
        cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", self.web_url,
               "--stop-timeout", f"{int(self.args.request_timeout)}s",
               "--exit-code-on-error", "0", "--loglevel", "WARNING", "--only-summary"]
        with open(self.logdir / "locust.log", "w") as out:
            popen = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.locust = Proc("locust", popen, self.logdir / "locust.log")
        say(f"locust: {self.args.reviewers} reviewers + {self.args.submitters} submitters log in "
            f"(at most {self.args.warmup:g} s), then {len(self.args.steps)} steps of {self.args.step_seconds:g} s "
            f"({', '.join(f'{r:g}' for r in self.args.steps)} submissions/s)"
            + (f", a {self.args.gap:g} s gap and a {self.args.spike_seconds:g} s spike" if self.args.spike_seconds
               else ""))

    # --- reading the run ---

    def results(self) -> dict:
        try:
            return json.loads(self.results_path.read_text())
        except (OSError, ValueError):
            return {}

    def wait_phase_end(self, label: str) -> dict | None:
        """Block until locust has written phase ``label``, its end has passed and every wizard
        started in it has ended (created its submission or failed), or the request timeout."""
        while True:
            res = self.results()
            phase = next((p for p in res.get("phases", []) if p["label"] == label), None)
            if phase and time.time() >= phase["end"] + 0.2:
                ended = sum(1 for _pk, _t, p in res.get("submissions", []) if p == label) + res.get(
                    "wizards_failed", {}).get(label, 0)
                if ended >= phase["issued"] or time.time() > phase["end"] + self.args.request_timeout + 10:
                    return phase
            if self.locust.popen.poll() is not None:
                if not res:
                    raise SystemExit("load: locust stopped before its first phase:\n"
                                     + self.locust.log_path.read_text(errors="replace")[-3000:])
                return phase
            time.sleep(0.5)

    def drafting(self, ids: list[int]) -> dict:
        """For these submissions: created -> drafted (routed or failed) seconds, and states."""
        from django.db import connection

        from workflows.models import AuditEvent, Submission

        subs = {s["id"]: s for s in Submission.objects.filter(pk__in=ids).values(
            "id", "state", "created_at", "updated_at", "failure_kind", "failure_reason")} if ids else {}
        routed = dict(AuditEvent.objects.filter(
            action="draft.routed", object_type="submission", object_id__in=[str(i) for i in ids]
        ).values_list("object_id", "created_at")) if ids else {}
        now = time.time()
        lags, ends = [], []
        for pk, s in subs.items():
            end = routed.get(str(pk))
            if end is not None:
                end = end.timestamp()
            elif s["state"] == "failed":
                end = s["updated_at"].timestamp()
            if end is None:
                lags.append(now - s["created_at"].timestamp())
            else:
                lags.append(end - s["created_at"].timestamp())
                ends.append(end)
        connection.close()
        states = collections.Counter(s["state"] for s in subs.values())
        failed_no_reason = sum(1 for s in subs.values()
                               if s["state"] == "failed" and not (s["failure_kind"] or s["failure_reason"]))
        return {"found": len(subs), "lags": lags, "states": states, "last_end": max(ends, default=None),
                "failed_no_reason": failed_no_reason}

    def step_report(self, res: dict, phase: dict) -> dict:
        label = phase["label"]
        seconds = phase["end"] - phase["start"]
        requests = [r for r in res.get("requests", []) if r["phase"] == label]
        status = collections.Counter()
        for r in requests:
            status.update(r["status"])
        ids = [pk for pk, _t, p in res.get("submissions", []) if p == label]
        drafting = self.drafting(ids)
        window = self.sampler.window(phase["start"], phase["end"])
        fails = res.get("wizards_failed", {}).get(label, 0)
        rate = phase["rate"] or 0.0
        achieved = len(ids) / seconds if seconds else 0.0
        lag95 = pct(drafting["lags"], .95)
        five = status.get("5xx", 0)
        other = status.get("no answer", 0) + status.get("unexpected", 0)
        reasons = []
        if five:
            reasons.append(f"{five} 5xx")
        if other:
            reasons.append(f"{other} failed requests")
        if fails:
            reasons.append(f"{fails} wizards failed")
        if rate and achieved < SUSTAIN_SHARE * rate:
            reasons.append(f"achieved {achieved:.2f}/s < {SUSTAIN_SHARE:.0%} of offered")
        pages = [v for r in requests if "login" not in r["name"] for v in r["ms"]]
        p95 = pct(pages, .95)
        if p95 == p95 and p95 > self.args.max_p95:
            reasons.append(f"p95 of the page requests {p95:.0f} ms > {self.args.max_p95:g} ms")
        if lag95 == lag95 and lag95 > self.args.max_lag:
            reasons.append(f"drafting lag p95 {lag95:.1f} s > {self.args.max_lag:g} s")
        return {"label": label, "rate": rate, "seconds": seconds, "achieved": achieved, "submitted": len(ids),
                "issued": phase.get("issued", 0), "status": dict(status), "p95": p95, "fails": fails, "lag95": lag95,
                "lag50": pct(drafting["lags"], .5), "window": window, "ok": not reasons, "reasons": reasons,
                "requests": requests, "drafting": drafting}

    # --- main ---

    def run(self) -> int:
        a = self.args
        bench = self.bench
        started = time.monotonic()
        say(f"load average at start: {Path('/proc/loadavg').read_text().split()[:3]} ({os.cpu_count()} cores; "
            "other processes on the machine lower every figure)")
        summary: dict = {}
        try:
            bench.setup()
            self.create_users()
            self.collectstatic()
            bench.purge()
            bench.sampler = PgSampler(bench.admin_url, bench.dbname, interval=0.25)
            bench.sampler.start()
            self.start_web()  # starts while the workers start
            bench.start_workers()
            self.wait_web()
            model_control(bench.model_url, f"/bench/delay?seconds={a.model_delay}")
            model_control(bench.model_url, f"/bench/certainty?review_share={a.review_share}&p=0.75")
            self.sampler = Sampler(self)
            self.sampler.start()
            self.start_locust()
            steps = []
            warm = None
            for rate in a.steps:
                phase = self.wait_phase_end(f"step {rate:g}/s")
                if phase is None:
                    break
                res = self.results()
                if warm is None:
                    warm = next(p for p in res["phases"] if p["label"] == "warmup")
                    say(f"  warm-up: {warm['logged_in']} of {a.reviewers + a.submitters} users logged in after "
                        f"{warm['end'] - warm['start']:.0f} s")
                step = self.step_report(res, phase)
                steps.append(step)
                say(f"  {step['label']}: {step['submitted']} submitted ({step['achieved']:.2f}/s), "
                    f"page p95 {step['p95']:.0f} ms, drafting lag p95 {step['lag95']:.1f} s, statuses {step['status']} -> "
                    + ("sustained" if step["ok"] else "NOT sustained: " + "; ".join(step["reasons"])))
            best = 0.0
            for step in steps:
                if not step["ok"]:
                    break
                best = step["rate"]
            spike_rate = a.spike_factor * (best or min(a.steps))
            self.control_path.write_text(json.dumps({"spike_rate": spike_rate}))
            spike = spike_phase = None
            if a.spike_seconds:
                say(f"  spike: {spike_rate:g} submissions/s offered for {a.spike_seconds:g} s "
                    f"({a.spike_factor:g} x {'the highest sustained rate' if best else 'the lowest step (none sustained)'})")
                spike_phase = self.wait_phase_end("spike")
            self.locust.popen.wait(timeout=a.request_timeout + 180)
            locust_end = time.time()
            res = self.results()
            if a.spike_seconds and spike_phase:
                spike_phase = next(p for p in res["phases"] if p["label"] == "spike")
                spike = self.step_report(res, spike_phase)
            drain = self.drain(res, spike_phase["end"] if spike else locust_end)
            summary = self.report(res, steps, best, spike, drain)
        finally:
            if self.sampler:
                self.sampler.stop_event.set()
            if self.locust:
                self.locust.stop(timeout=10)
            if self.web:
                self.web.stop(timeout=10)
            bench.cleanup()
        if a.json:
            Path(a.json).write_text(json.dumps(summary, default=str, indent=2))
        if a.keep:
            say(f"logs kept in {self.logdir}")
        else:
            shutil.rmtree(self.logdir, ignore_errors=True)
        say(f"\nload bench finished in {time.monotonic() - started:.0f} s")
        return 0

    def drain(self, res: dict, spike_end: float) -> dict:
        """Wait until nothing is left submitted or generating and the llm queue is empty."""
        ids = [pk for pk, _t, _p in res.get("submissions", [])]
        deadline = time.monotonic() + self.args.drain_timeout
        while time.monotonic() < deadline:
            row = self.sampler.rows[-1] if self.sampler.rows else None
            if row and row["t"] > time.time() - 2 and row["backlog"] == 0 and row["llm_queue"] == 0:
                break
            time.sleep(0.5)
        drained_at = next((row["t"] for row in self.sampler.rows
                           if row["t"] >= spike_end and row["backlog"] == 0 and row["llm_queue"] == 0), None)
        drafting = self.drafting(ids)
        last_end = drafting["last_end"]
        return {"drafting": drafting, "drained_at": drained_at,
                "drain_seconds": (max(last_end, spike_end) - spike_end) if last_end else float("nan"),
                "sampled_drain_seconds": (drained_at - spike_end) if drained_at else float("nan")}

    def accounting(self, res: dict, drain: dict) -> dict:
        from django.db import connection

        from workflows import audit
        from workflows.models import Submission

        seen = {pk for pk, _t, _p in res.get("submissions", [])}
        rows = dict(Submission.objects.filter(submitted_by__username__startswith=self.submitter_prefix)
                    .values_list("pk", "state"))
        by_state = collections.Counter(rows.values())
        routed = sum(by_state.get(s, 0) for s in ROUTED_STATES)
        failed = by_state.get("failed", 0)
        pending = sum(by_state.get(s, 0) for s in PENDING_STATES)
        chain = audit.verify_chain()
        connection.close()
        return {"seen": len(seen), "in_db": len(rows), "missing": len(seen - rows.keys()),
                "unseen": len(rows.keys() - seen), "routed": routed, "failed": failed,
                "failed_no_reason": drain["drafting"]["failed_no_reason"], "pending": pending,
                "states": dict(by_state), "chain_ok": chain.ok, "chain_checked": chain.checked}

    # --- the report ---

    def saturation(self, step: dict) -> str:
        """Which tier gave out first at this step, and the evidence: the web (its requests wait:
        page p95 over --max-p95, or locust could not start wizards at the offered rate) or the
        drafting (lag over --max-lag, a growing backlog); with each component's CPU beside it."""
        w = step["window"]
        if not w:
            return "not measured"
        a = self.args
        cores = w["cores"]
        app = {"web (gunicorn)": cores.get("web", 0.0),
               "workers (celery)": sum(v for k, v in cores.items() if k.startswith("worker")),
               "PostgreSQL (bench db backends)": cores.get("postgres", 0.0),
               "Redis": cores.get("redis", 0.0)}
        web_behind = (step["p95"] == step["p95"] and step["p95"] > a.max_p95) or (
            step["rate"] and step["achieved"] < SUSTAIN_SHARE * step["rate"])
        lag = step["lag95"]
        drafting_behind = (lag == lag and lag > a.max_lag) or w["backlog_end"] > max(
            3, step["rate"] * (a.model_delay + 2))
        n_requests = sum(len(r["ms"]) for r in step["requests"])
        per_request = cores.get("web", 0.0) * w["wall"] / n_requests * 1000 if n_requests else float("nan")
        if web_behind and not drafting_behind:
            first = (f"the web tier (gunicorn, {a.web_workers} sync workers): page p95 {step['p95']:.0f} ms, "
                     f"{step['achieved']:.2f} of {step['rate']:g} submissions/s started, "
                     f"{n_requests / w['wall']:.1f} requests/s at {per_request:.0f} ms of web CPU each, "
                     f"while drafting keeps up (lag p95 {lag:.1f} s with a {a.model_delay:g} s model, "
                     f"llm queue max {w['llm_queue']}, backlog max {w['backlog']})")
        elif drafting_behind:
            first = (f"drafting: lag p95 {lag:.1f} s, backlog {w['backlog_end']} at the end of the step, "
                     f"llm queue max {w['llm_queue']}")
        else:
            first = "nothing: every step was sustained"
        pegged = [k for k, v in w["busiest"].items() if v >= 0.85 and (k == "web" or k.startswith("worker"))]
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in sorted(app.items(), key=lambda kv: -kv[1]))
        machine = (f"machine {w['machine_busy']:.0%} busy over {w['ncpu']} cores, {w['others']:.2f} cores of it "
                   "outside this bench")
        return (f"{first}. CPU in cores: {cpu}, locust {cores.get('locust', 0.0):.2f}; {machine}"
                + (f"; a process at >= 85% of a core: {', '.join(pegged)}" if pegged else "")
                + f"; PostgreSQL connections max {w['pg_conns']}")

    def report(self, res: dict, steps: list[dict], best: float, spike: dict | None, drain: dict) -> dict:
        a = self.args
        acc = self.accounting(res, drain)
        say("\n=== Phases (CPU in cores, 1.00 = one core, others = the rest of the machine; max over the phase for "
            "connections, queue, backlog) ===")
        headers = ("phase", "offered/s", "achieved/s", "5xx", "failed", "p95 ms", "lag p95 s", "web", "workers", "postgres",
                   "redis", "locust", "others", "machine", "PG conns", "llm queue", "backlog", "")
        rows = []
        for step in steps + ([spike] if spike else []):
            w = step["window"] or {"cores": {}, "machine_busy": 0, "pg_conns": 0, "llm_queue": 0, "backlog": 0}
            c = w["cores"]
            failed = step["status"].get("no answer", 0) + step["status"].get("unexpected", 0) + step["fails"]
            rows.append((step["label"], f"{step['rate']:g}", f"{step['achieved']:.2f}", step["status"].get("5xx", 0),
                         failed, f"{step['p95']:.0f}", f"{step['lag95']:.1f}" if step["lag95"] == step["lag95"] else "-", f"{c.get('web', 0):.2f}",
                         f"{sum(v for k, v in c.items() if k.startswith('worker')):.2f}",
                         f"{c.get('postgres', 0):.2f}", f"{c.get('redis', 0):.2f}", f"{c.get('locust', 0):.2f}",
                         f"{w.get('others', 0):.2f}", f"{w['machine_busy']:.0%}", w["pg_conns"], w["llm_queue"], w["backlog"],
                         "sustained" if step["ok"] else "no"))
        print_table(headers, rows)
        # p95 per endpoint in every phase; p50 / p95 / max at the highest sustained step and the spike.
        best_step = next((s for s in steps if s["rate"] == best), None)
        warm = [r for r in res.get("requests", []) if r["phase"] == "warmup"]
        names = sorted({r["name"] for s in steps + ([spike] if spike else []) for r in s["requests"]}
                       | {r["name"] for r in warm})
        phases = [("warm-up", warm)] + [(s["label"].replace("step ", ""), s["requests"])
                                        for s in steps + ([spike] if spike else [])]

        def ms_of(reqs, name):
            return [v for r in reqs if r["name"] == name for v in r["ms"]]

        say("\n=== p95 per endpoint and phase, ms ===")
        print_table(["endpoint"] + [c for c, _ in phases],
                    [[name] + [f"{pct(ms, .95):.0f}" if (ms := ms_of(reqs, name)) else "-" for _, reqs in phases]
                     for name in names])
        cols = []
        if best_step:
            cols.append((f"{best_step['label']} (highest sustained)", best_step["requests"]))
        if spike:
            cols.append(("spike", spike["requests"]))
        table = []
        for name in names:
            row = [name]
            for _, reqs in cols:
                ms = ms_of(reqs, name)
                row.append(f"{pct(ms, .5):.0f} / {pct(ms, .95):.0f} / {max(ms):.0f}, {len(ms)}" if ms else "-")
            table.append(row)
        if cols:
            say("\n=== p50 / p95 / max ms, n ===")
            print_table(["endpoint"] + [c for c, _ in cols], table)
        first_bad = next((s for s in steps if not s["ok"]), None)
        sat_step = first_bad or (steps[-1] if steps else None)
        saturation = self.saturation(sat_step) if sat_step else "not measured"
        decisions = res.get("decisions", {})
        say(f"\nreviewer actions: {decisions}")
        if res.get("errors"):
            say("first failed requests: " + "\n  ".join([""] + res["errors"]))
        say(f"submissions by state at the end: {acc['states']}")
        say(f"what saturates first ({sat_step['label'] if sat_step else '-'}"
            f"{', the first step not sustained' if first_bad else ', the highest step, all sustained'}): {saturation}")
        # The summary table, as run_bench.py prints its own.
        out = []
        add = lambda fig, value, target="", ok=None: out.append(  # noqa: E731
            (fig, value, target, "" if ok is None else ("pass" if ok else "MISSED")))
        add("highest sustained submission rate", f"{best:g}/s" if best else "none of the steps",
            f"of {', '.join(f'{r:g}' for r in a.steps)}/s")
        if best_step:
            wiz = [v for r in best_step["requests"] if "creates" in r["name"] for v in r["ms"]]
            add("  p95 of the submitting POST there", f"{pct(wiz, .95):.0f} ms")
            add("  drafting lag p95 there (created -> routed)", f"{best_step['lag95']:.1f} s",
                f"<= {a.max_lag:g} s", best_step["lag95"] <= a.max_lag)
        total5 = sum(s["status"].get("5xx", 0) for s in steps)
        add("5xx during the steps", str(total5), "0", total5 == 0)
        if spike:
            add(f"spike: offered {spike['rate']:g}/s for {spike['seconds']:.0f} s", f"achieved {spike['achieved']:.2f}/s "
                f"({spike['submitted']} submitted)")
            add("  5xx in the spike", str(spike["status"].get("5xx", 0)), "0", spike["status"].get("5xx", 0) == 0)
            add("  failed requests / wizards in the spike",
                f"{spike['status'].get('no answer', 0) + spike['status'].get('unexpected', 0)} / {spike['fails']}")
            add("  queue drained after the spike ended in", f"{drain['drain_seconds']:.1f} s",
                f"within --drain-timeout {a.drain_timeout:g} s",
                drain["drain_seconds"] == drain["drain_seconds"] and acc["pending"] == 0)
        add("submissions seen by locust / in the database", f"{acc['seen']} / {acc['in_db']}",
            "equal (none missing)", acc["missing"] == 0)
        add("  routed (routed, approved, rejected, regenerating)", str(acc["routed"]))
        add("  failed, with a reason / without", f"{acc['failed'] - acc['failed_no_reason']} / {acc['failed_no_reason']}",
            "0 without", acc["failed_no_reason"] == 0)
        add("  left submitted or generating after the drain", str(acc["pending"]), "0", acc["pending"] == 0)
        accounted = acc["routed"] + acc["failed"] == acc["in_db"] and acc["missing"] == 0
        add("every submission accounted for (= routed + failed)", "yes" if accounted else "NO", "yes", accounted)
        add("audit chain after the run", "intact" if acc["chain_ok"] else "BROKEN", "intact", acc["chain_ok"])
        pg_max = max((s["window"].get("pg_conns", 0) for s in steps + ([spike] if spike else []) if s["window"]),
                     default=0)
        add("PostgreSQL connections to the bench db, max", str(pg_max))
        say("")
        say(f"ReviewDesk load bench: gunicorn --workers {a.web_workers} + {a.workers} celery worker(s) x -P threads "
            f"-c {a.concurrency}, model {a.model_delay:g} s ({a.review_share:.0%} to review), {a.reviewers} reviewers, "
            f"{a.submitters} submitters, {os.cpu_count()} cores, load average now "
            f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
        print_table(("figure", "ReviewDesk", "target", ""), out)
        missed = [r[0].strip() for r in out if r[3] == "MISSED"]
        say("!!! MISSED: " + "; ".join(missed) + " !!!" if missed else "all checks met")
        return {"best_rate": best, "steps": [strip(s) for s in steps], "spike": strip(spike) if spike else None,
                "drain_seconds": drain["drain_seconds"], "accounting": acc, "saturation": saturation,
                "decisions": decisions, "missed": missed, "errors": res.get("errors", []),
                "p95": {row[0]: dict(zip([c for c, _ in cols], row[1:])) for row in table}}


def strip(step: dict) -> dict:
    return {k: v for k, v in step.items() if k not in ("requests", "drafting")} | {
        "states": dict(step["drafting"]["states"])}


def print_table(headers, rows) -> None:
    rows = [tuple(str(v) for v in row) for row in rows]
    widths = [max(len(str(r[i])) for r in [tuple(headers), *rows]) for i in range(len(headers))]
    rule = "-+-".join("-" * w for w in widths)
    say(" | ".join(str(h).ljust(w) for h, w in zip(headers, widths)))
    say(rule)
    for row in rows:
        say(" | ".join(v.ljust(w) for v, w in zip(row, widths)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="ReviewDesk load bench (make bench-load)")
    rates = lambda text: [float(x) for x in text.split(",") if x.strip()]  # noqa: E731
    p.add_argument("--steps", type=rates, default=[0.5, 1.0, 2.0, 3.0, 4.0, 6.0],
                   help="submission rates per second, one step each, rising (default 0.5,1,2,3,4,6)")
    p.add_argument("--step-seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=120.0,
                   help="at most this many seconds for every user to log in (the steps start when all have)")
    p.add_argument("--gap", type=float, default=15.0, help="seconds between the steps and the spike")
    p.add_argument("--spike-seconds", type=float, default=60.0, help="0: no spike")
    p.add_argument("--spike-factor", type=float, default=10.0)
    p.add_argument("--reviewers", type=int, default=20)
    p.add_argument("--submitters", type=int, default=60,
                   help="submitter users (each logs in once): the most submissions in progress at once")
    p.add_argument("--think", type=float, nargs=2, default=[1.0, 3.0], metavar=("MIN", "MAX"),
                   help="a reviewer's seconds before deciding")
    p.add_argument("--poll", type=float, default=15.0,
                   help="an idle reviewer reloads the empty queue every POLL/3..POLL s (the page polls every 15 s)")
    p.add_argument("--step-think", type=float, nargs=2, default=[0.3, 1.0], metavar=("MIN", "MAX"),
                   help="a submitter's seconds on each wizard page")
    p.add_argument("--status-polls", type=int, default=2, help="polls of the submission page after submitting")
    p.add_argument("--model-delay", type=float, default=2.0, help="seconds the fake model takes to answer")
    p.add_argument("--review-share", type=float, default=0.5, help="share of drafts uncertain enough for review")
    p.add_argument("--max-lag", type=float, default=10.0, help="drafting lag p95 (s) a sustained step stays within")
    p.add_argument("--max-p95", type=float, default=2000.0,
                   help="p95 (ms) of a sustained step's page requests (all but the log-ins)")
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--request-timeout", type=float, default=60.0)
    p.add_argument("--web-workers", type=int, default=3, help="gunicorn --workers (docker-compose.yml: 3)")
    p.add_argument("--web-env", action="append", default=[], metavar="NAME=VALUE", help="extra env for gunicorn")
    p.add_argument("--workers", type=int, default=2, help="celery worker processes")
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--json", default="", help="write the summary here")
    p.add_argument("--keep", action="store_true", help="keep the database and the logs")
    p.add_argument("--smoke", action="store_true",
                   help="a few seconds at a tiny rate (tests/integration/test_load_bench.py)")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.step_seconds, args.warmup, args.gap = [0.5], 6.0, 30.0, 2.0
        args.spike_seconds, args.spike_factor, args.review_share = 3.0, 2.0, 1.0
        args.reviewers, args.submitters, args.web_workers, args.workers, args.concurrency = 2, 3, 1, 1, 20
        args.model_delay, args.think, args.step_think, args.status_polls = 0.2, [0.2, 0.5], [0.05, 0.1], 1
        args.poll = 1.0
        args.drain_timeout, args.request_timeout = 30.0, 20.0
    if sorted(args.steps) != args.steps or not args.steps:
        p.error("--steps: one or more rising rates")
    return args


def main(argv=None) -> int:
    return LoadBench(parse_args(argv)).run()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        sys.exit(main())
