"""`make bench`: ReviewDesk against bare Celery, on real PostgreSQL, Redis and worker processes.

    python -m tests.bench.run_bench [--pool threads] [--concurrency 200] [--workers 2] ...

Not a test (pytest never collects it: python_files is test_*.py); it measures and always exits 0
once the services are there, printing MISSED next to any target it misses.

What it does, in its own database (reviewdesk_bench_<pid>, created, migrated and dropped), its
own Redis db (11 unless BENCH_REDIS_URL says otherwise) and its own queue names and cache keys
(REVIEWDESK_NAMESPACE=bench<pid>.), so it never meets a test run or another bench:

1. Starts a fake OpenAI-compatible server (fake_model_server.py, own process, loopback) and
   profiles the SQL statements of one draft in this process, with no worker running.
2. Starts the workers exactly as docker-compose.yml does (``-P threads``, high concurrency, both
   queues), with the baseline tasks of bench_tasks.py included, and REVIEWDESK_DB_POOL_MAX
   sized so that the workers and this driver together stay within --max-connections.
3. Figure 1, overhead: one submission at a time through services.submission_create with an
   instant model, commit -> routed (a NOTIFY fired by a trigger on the bench database when the
   submission leaves "generating", i.e. seen at the worker's COMMIT), interleaved with a no-op
   task's round trip (send -> the worker's RPUSH seen by BLPOP).
4. Figure 2, throughput, with a model that answers in --model-delay seconds:
   - bare: --drafts sleep tasks queued while the workers do not consume the llm queue
     (cancel_consumer), then released at once (add_consumer); tasks/s until the last is done;
   - burst (the figure held against the target): --drafts submissions created through
     submission_create by --creators threads the same way, then released; drafts/s until the
     last is routed (the draft.routed audit events' timestamps);
   - live (information): the same, created while the workers consume, so this one driver
     process's creation rate is part of it.
   pg_stat_activity is polled every 50 ms all along (connections per process, sessions waiting
   on the audit-chain advisory lock, what the lock holder is doing), and CPU is read from /proc
   per process: the workers, the fake model, this driver, Redis, the bench database's backends,
   and what the rest of the machine used meanwhile (another test run lowers every figure).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DONE_STATES = ("routed", "approved")
OVERHEAD_TARGET_MS = 50.0
DRAFTS_TARGET = 80.0
CONNECTIONS_TARGET = 20

CUSTOMER_REPLY = {
    "customer_name": "Ann Example",
    "customer_email": "ann@example.com",
    "channel": "email",
    "complaint": "My parcel arrived broken.",
    "order_value": "42.50",
    "refund_offered": True,
}


def say(text: str = "") -> None:
    print(text, flush=True)


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


# --- CPU accounting ---------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from 3 (state) on


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system, all threads) of every live process in a process group."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields and int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def pids_cpu(pids) -> dict[int, float]:
    out = {}
    for pid in pids:
        fields = _proc_stat(pid)
        if fields:
            out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def named_cpu(name: str) -> float:
    total = 0.0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if Path(f"/proc/{entry.name}/comm").read_text().strip() == name:
                    total += sum(pids_cpu([int(entry.name)]).values())
            except OSError:
                pass
    return total


def machine_cpu() -> tuple[float, float, float]:
    """(busy, total, kernel) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    kernel = values[2] + values[5] + values[6]
    return (total - idle) / CLK_TCK, total / CLK_TCK, kernel / CLK_TCK


# --- PostgreSQL sampler -----------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    phase: str
    by_app: dict[str, int]
    advisory_waiting: int
    idle_in_tx: int
    active: int
    backend_pids: list[int]
    lock_holder: str = ""  # what the session holding the audit-chain advisory lock is doing

    @property
    def counted(self) -> int:
        """Connections of the app under test (workers + the driver standing in for web)."""
        return sum(n for app, n in self.by_app.items() if not app.startswith("bench-listener"))

    @property
    def workers(self) -> int:
        return sum(n for app, n in self.by_app.items() if app.startswith("bench-worker"))


def describe_holder(row) -> str:
    """The lock holder's state, in the words of the report."""
    if row is None:
        return "lock free"
    state, wait_type, wait_event, query = row
    if state and state.startswith("idle in transaction"):
        return "held, server idle: waiting for the client (Python) to send the next statement"
    if query and query.strip().upper().startswith("COMMIT"):
        return f"held, COMMIT in progress ({wait_event or 'on CPU'})"
    if wait_type == "Lock" and wait_event == "advisory":
        # pg_locks and pg_stat_activity are read a moment apart: the lock was just granted.
        return "held, just granted"
    return f"held, statement running ({wait_event or 'on CPU'})"


class PgSampler(threading.Thread):
    """Polls pg_stat_activity for the bench database from a connection to another database
    (so the sampler itself is never counted)."""

    def __init__(self, admin_url: str, dbname: str, interval: float = 0.05):
        super().__init__(daemon=True, name="pg-sampler")
        self.admin_url, self.dbname, self.interval = admin_url, dbname, interval
        self.samples: list[Sample] = []
        self.phase = "idle"
        self.stop_event = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, application_name="bench-sampler") as conn:
            while not self.stop_event.is_set():
                rows = conn.execute(
                    "SELECT coalesce(application_name, ''), state, wait_event_type, wait_event, pid "
                    "FROM pg_stat_activity WHERE datname = %s", [self.dbname]).fetchall()
                by_app: dict[str, int] = collections.Counter()
                advisory = idle_tx = active = 0
                pids = []
                for app, state, wtype, wevent, pid in rows:
                    by_app[app] += 1
                    pids.append(pid)
                    if wtype == "Lock" and wevent == "advisory":
                        advisory += 1
                    if state and state.startswith("idle in transaction"):
                        idle_tx += 1
                    if state == "active":
                        active += 1
                holder = conn.execute(
                    "SELECT a.state, a.wait_event_type, a.wait_event, left(a.query, 40) FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                    "AND a.datname = %s LIMIT 1", [self.dbname]).fetchone()
                self.samples.append(Sample(time.time(), self.phase, dict(by_app), advisory, idle_tx, active, pids,
                                           describe_holder(holder)))
                self.stop_event.wait(self.interval)

    def of(self, phase: str) -> list[Sample]:
        return [s for s in self.samples if s.phase == phase]

    def backend_pids(self, phase: str) -> set[int]:
        return {pid for s in self.of(phase) for pid in s.backend_pids}


# --- processes ---------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 20.0) -> None:
        """TERM the process itself (a Celery worker then shuts down warm), then KILL its own
        process group (started with start_new_session) if it is still there."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)


def start_model_server() -> tuple[Proc, str]:
    popen = subprocess.Popen([sys.executable, str(Path(__file__).with_name("fake_model_server.py"))],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    line = popen.stdout.readline()
    if not line.startswith("PORT "):
        popen.kill()
        raise SystemExit(f"bench: the fake model server did not start ({line!r})")
    return Proc("model-server", popen), f"http://127.0.0.1:{int(line.split()[1])}"


def model_control(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=5) as response:
        return json.loads(response.read())


# --- the statement profile -----------------------------------------------------------------


@dataclass
class Statement:
    sql: str
    params: tuple
    started: float
    seconds: float


class StatementLog:
    """Every statement this thread's connection sends, through Django's execute_wrapper (the
    SQL with its placeholders, so identical statements group together)."""

    def __init__(self):
        self.statements: list[Statement] = []

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.statements.append(Statement(sql, tuple(params or ()), started, time.perf_counter() - started))


_COLUMN_LIST = re.compile(r'^SELECT (.+?) FROM ', re.S)
_SET_LIST = re.compile(r'^UPDATE ("[^"]+") SET (.+?) WHERE ', re.S)
_INSERT = re.compile(r'^INSERT INTO ("[^"]+") \((.+?)\) VALUES', re.S)
_IN_LIST = re.compile(r"IN \(%s(?:, %s)+\)")


def shape(sql: str) -> str:
    """A statement, short: column lists counted instead of spelled out."""
    text = _IN_LIST.sub("IN (%s, ...)", " ".join(sql.split()))
    if m := _SET_LIST.match(text):
        columns = m.group(2).count("=")
        text = f"UPDATE {m.group(1)} SET <{columns} columns> WHERE " + text[m.end():]
    elif m := _INSERT.match(text):
        columns = m.group(2).count(",") + 1
        text = f"INSERT INTO {m.group(1)} (<{columns} columns>) VALUES ..." + (
            " RETURNING ..." if "RETURNING" in text else "")
    elif m := _COLUMN_LIST.match(text):
        columns = m.group(1)
        if columns.count(",") >= 2:
            text = f"SELECT <{columns.count(',') + 1} columns> FROM " + text[m.end():]
    return text.replace('"', "")[:200]


@dataclass
class PhaseProfile:
    name: str
    statements: list[Statement]
    seconds: float
    lock_held: float | None = None  # first advisory lock -> the service returned (COMMIT done)
    under_lock: int = 0

    @property
    def count(self) -> int:
        return len(self.statements)


def profile_call(name: str, log: StatementLog, fn, *args, **kwargs):
    start_index = len(log.statements)
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    ended = time.perf_counter()
    statements = log.statements[start_index:]
    phase = PhaseProfile(name, statements, ended - started)
    locks = [i for i, s in enumerate(statements) if "pg_advisory_xact_lock" in s.sql]
    if locks:
        phase.lock_held = ended - statements[locks[0]].started
        phase.under_lock = len(statements) - locks[0]
    return result, phase


def statement_profile(version, user, n: int = 5) -> dict:
    """Create and generate ``n`` drafts in this process, statement by statement."""
    from django.db import connection

    from workflows import services
    from workflows.pipeline import run
    from workflows.pipeline.engines import default_engine

    log = StatementLog()
    runs = []
    with connection.execute_wrapper(log):
        for i in range(n):
            data = {**CUSTOMER_REPLY, "complaint": f"My parcel arrived broken, profile item {i}."}
            sub, create = profile_call("submission_create", log, services.submission_create,
                                       version=version, user=user, data=data)
            claimed, claim = profile_call("generation_claim", log, services.generation_claim, submission_id=sub.pk)
            cpu0 = time.thread_time()
            result, pipeline = profile_call("pipeline.run", log, run, claimed.workflow_version.spec, claimed.data,
                                            engine=default_engine(), feedback=claimed.regenerate_feedback)
            pipeline_cpu = time.thread_time() - cpu0
            draft, record = profile_call("draft_record", log, services.draft_record, submission_id=sub.pk,
                                         attempt=claimed.attempts, result=result)
            assert draft is not None, "the profiled draft was not recorded"
            runs.append({"create": create, "claim": claim, "pipeline": pipeline, "record": record,
                         "pipeline_cpu": pipeline_cpu, "lane": draft.lane})
    return {"runs": runs}


def print_statement_profile(profile: dict) -> dict:
    runs = profile["runs"]
    last = runs[-1]  # steady state: caches warm, the system user exists
    say("\n=== SQL statements per draft (in-process, unloaded, no worker running) ===")
    say("counts per run: " + "; ".join(
        f"create {r['create'].count} / claim {r['claim'].count} / pipeline {r['pipeline'].count} / "
        f"record {r['record'].count}" for r in runs))
    say(f"(every run lands in lane {', '.join(sorted({r['lane'] for r in runs}))})")
    for key in ("create", "claim", "record"):
        phase: PhaseProfile = last[key]
        say(f"\n-- {phase.name}: {phase.count} statements, {phase.seconds * 1000:.1f} ms"
            + (f"; chain advisory lock held {phase.lock_held * 1000:.1f} ms over the last "
               f"{phase.under_lock} statements + COMMIT" if phase.lock_held is not None else ""))
        grouped: dict[str, int] = collections.OrderedDict()
        for s in phase.statements:
            grouped[shape(s.sql)] = grouped.get(shape(s.sql), 0) + 1
        for text, count in grouped.items():
            say(f"   {count:>2} x {text}")
    pipeline = last["pipeline"]
    say(f"\n-- pipeline.run: {pipeline.count} statements, {pipeline.seconds * 1000:.1f} ms wall, "
        f"{last['pipeline_cpu'] * 1000:.1f} ms CPU (instant model, includes the HTTP round trip)")
    # Categories the issue asks about, summed over claim + record (the task's own transactions).
    task = last["claim"].statements + last["record"].statements
    cats = collections.Counter()
    for s in task:
        sql = s.sql
        if "pg_advisory_xact_lock" in sql:
            cats["advisory lock (audit chain)"] += 1
        elif 'FROM "auth_user"' in sql and "username" in sql:
            cats["system-user lookup (auth_user by username)"] += 1
        elif sql.startswith("UPDATE"):
            cats[f"UPDATE {sql.split()[1].strip(chr(34))} (full row: {sql.split(' WHERE ')[0].count('=')} columns)"] += 1
        elif sql.startswith("INSERT") and "historical" in sql:
            cats["INSERT history row (simple-history)"] += 1
        elif sql.startswith("INSERT") and "auditevent" in sql:
            cats["INSERT audit event"] += 1
        elif "ORDER BY" in sql and "auditevent" in sql:
            cats["SELECT audit chain head"] += 1
        elif sql.startswith("INSERT"):
            cats["INSERT " + sql.split()[2].strip('"')] += 1
        elif sql.startswith(("SAVEPOINT", "RELEASE")):
            cats["SAVEPOINT / RELEASE"] += 1
        else:
            cats["SELECT " + (re.search(r'FROM "([^"]+)"', sql) or [None, "?"])[1]] += 1
    say(f"\n-- the task's transactions (claim + record) by kind, {len(task)} statements:")
    for name, count in cats.most_common():
        say(f"   {count:>2} x {name}")
    return {
        "create": last["create"].count, "claim": last["claim"].count, "record": last["record"].count,
        "task": len(task), "with_create": len(task) + last["create"].count,
        "lock_ms": {k: last[k].lock_held * 1000 for k in ("create", "claim", "record") if last[k].lock_held},
        "pipeline_cpu_ms": last["pipeline_cpu"] * 1000, "pipeline_ms": pipeline.seconds * 1000,
        "record_ms": last["record"].seconds * 1000, "claim_ms": last["claim"].seconds * 1000,
        "create_ms": last["create"].seconds * 1000,
    }


# --- the bench -----------------------------------------------------------------------------


@dataclass
class Result:
    rows: list[tuple] = field(default_factory=list)  # figure, reviewdesk, baseline, ratio, target, verdict
    notes: list[str] = field(default_factory=list)

    def add(self, figure, reviewdesk, baseline="", ratio="", target="", ok: bool | None = None):
        verdict = "" if ok is None else ("pass" if ok else "MISSED")
        self.rows.append((figure, reviewdesk, baseline, ratio, target, verdict))


class Bench:
    def __init__(self, args):
        self.args = args
        self.pid = os.getpid()
        self.dbname = f"reviewdesk_bench_{self.pid}"
        self.admin_url = os.environ.get("BENCH_PG_URL") or DEFAULT_PG_URL
        self.redis_url = os.environ.get("BENCH_REDIS_URL") or DEFAULT_REDIS_URL
        self.db_url = with_db(self.admin_url, self.dbname)
        self.namespace = f"bench{self.pid}."
        self.workers: list[Proc] = []
        self.model: Proc | None = None
        self.model_url = ""
        self.sampler: PgSampler | None = None
        self.result = Result()
        self.logdir = Path(tempfile.mkdtemp(prefix="reviewdesk-bench-"))
        self.db_created = False
        self.hostname = socket.gethostname()

    # --- setup ---

    def check_services(self) -> None:
        import psycopg
        import redis

        try:
            psycopg.connect(self.admin_url, connect_timeout=3).close()
        except psycopg.Error as exc:
            raise SystemExit(f"bench: PostgreSQL is not reachable at {self.admin_url} ({exc}); start it "
                             "(pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) "
                             "or set BENCH_PG_URL.") from None
        try:
            redis.Redis.from_url(self.redis_url, socket_connect_timeout=3).ping()
        except redis.RedisError as exc:
            raise SystemExit(f"bench: Redis is not reachable at {self.redis_url} ({exc}); start it "
                             "(redis-server --daemonize yes --bind 127.0.0.1 --save '' --appendonly no) "
                             "or set BENCH_REDIS_URL.") from None

    def pool_sizes(self) -> tuple[int, int]:
        a = self.args
        per_worker = a.db_pool_max or max(1, (a.max_connections - a.driver_pool) // a.workers)
        return per_worker, a.driver_pool

    def common_env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.db_url,
            "REDIS_URL": self.redis_url,
            "REVIEWDESK_NAMESPACE": self.namespace,
            "OPENAI_API_KEY": "sk-bench-reviewdesk",
            "OPENAI_BASE_URL": self.model_url + "/v1",
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": secrets.token_hex(32),
            "DJANGO_ALLOWED_HOSTS": "localhost",
            # Plain HTTP on loopback: production settings would otherwise redirect every request
            # to HTTPS (DJANGO_SSL_REDIRECT defaults to on when DJANGO_DEBUG=false).
            "DJANGO_SSL_REDIRECT": "false",
            "DJANGO_SETTINGS_MODULE": "reviewdesk.settings",
        }

    def setup(self) -> None:
        import psycopg
        import psycopg.sql

        self.check_services()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
            self.db_created = True
            for setting in self.args.pg_set:
                name, _, value = setting.partition("=")
                if not re.fullmatch(r"[a-z_.]+", name):
                    raise SystemExit(f"bench: --pg-set {setting!r}: not a setting name")
                conn.execute(psycopg.sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    psycopg.sql.Identifier(self.dbname), psycopg.sql.SQL(name), psycopg.sql.Literal(value)))
        self.model, self.model_url = start_model_server()
        _, driver_pool = self.pool_sizes()
        os.environ.update(self.common_env())
        os.environ.update({"REVIEWDESK_DB_POOL_MAX": str(driver_pool), "PGAPPNAME": "bench-driver",
                           "REVIEWDESK_LOG_LEVEL": "WARNING"})
        import django

        django.setup()
        from django.core.management import call_command
        from django.test import override_settings

        t0 = time.monotonic()
        with open(os.devnull, "w") as devnull:
            call_command("migrate", verbosity=0, interactive=False, stdout=devnull)
            with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
                call_command("seed_demo", stdout=devnull)
        say(f"database {self.dbname} migrated and seeded in {time.monotonic() - t0:.1f} s")
        from django.contrib.auth import get_user_model

        from workflows.models import Workflow

        self.version = Workflow.objects.get(slug="customer-reply").versions.order_by("-number").first()
        self.user = get_user_model().objects.get(username="submitter")

    def queues(self) -> tuple[str, str]:
        from django.conf import settings

        return settings.REVIEWDESK_LLM_QUEUE, settings.CELERY_TASK_DEFAULT_QUEUE

    def purge(self) -> None:
        from reviewdesk.celery import app

        with app.connection_for_write() as conn:
            for queue in self.queues():
                with contextlib.suppress(Exception):
                    conn.default_channel.queue_purge(queue)

    def start_workers(self) -> None:
        a = self.args
        per_worker, _ = self.pool_sizes()
        llm, default = self.queues()
        for i in range(1, a.workers + 1):
            name = f"bench{i}-{self.pid}@{self.hostname}"
            env = {**os.environ, **self.common_env(), "REVIEWDESK_DB_POOL_MAX": str(per_worker),
                   "PGAPPNAME": f"bench-worker{i}", "REVIEWDESK_LOG_LEVEL": "INFO"}
            if a.switch_interval:
                env["BENCH_SWITCH_INTERVAL"] = str(a.switch_interval)
            log_path = self.logdir / f"worker{i}.log"
            cmd = [a.worker_python, "-m", "celery", "-A", "reviewdesk", "worker", "-P", a.pool,
                   "-c", str(a.concurrency), "-Q", f"{llm},{default}", "--include", "tests.bench.bench_tasks",
                   "-n", name, "-l", "info", "--without-heartbeat", "--without-mingle", "--without-gossip"]
            with open(log_path, "w") as log:
                popen = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            proc = Proc(name, popen, log_path)
            self.workers.append(proc)
        from reviewdesk.celery import app

        deadline = time.monotonic() + 90
        for proc in self.workers:
            while not app.control.ping(destination=[proc.name], timeout=1.0):
                if proc.popen.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"bench: worker {proc.name} did not start:\n{proc.log_path.read_text()[-3000:]}")
        # worker_ready (bench_tasks._warm_up) runs before the worker answers pings.
        say(f"{a.workers} worker(s) up: -P {a.pool} -c {a.concurrency}, REVIEWDESK_DB_POOL_MAX={per_worker} each; "
            f"driver pool {self.pool_sizes()[1]}; logs in {self.logdir}")

    # --- helpers ---

    def redis(self):
        import redis

        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    def send(self, name: str, args: list) -> None:
        from reviewdesk.celery import app

        app.send_task(name, args=args, queue=self.queues()[0])

    def create(self, i: int, label: str):
        from workflows import services

        data = {**CUSTOMER_REPLY, "complaint": f"My parcel arrived broken, {label} item {i}."}
        return services.submission_create(version=self.version, user=self.user, data=data)

    def wait_done(self, floor: int, n: int, timeout: float) -> tuple[int, int]:
        """Poll until ``n`` submissions above id ``floor`` are routed or failed; (done, failed)."""
        from django.db import connection

        deadline = time.monotonic() + timeout
        done = failed = 0
        while time.monotonic() < deadline:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FILTER (WHERE state IN ('routed', 'approved')), "
                               "count(*) FILTER (WHERE state = 'failed') FROM workflows_submission WHERE id > %s",
                               [floor])
                done, failed = cursor.fetchone()
            if done + failed >= n:
                break
            time.sleep(0.2)
        return done, failed

    def max_submission_id(self) -> int:
        from workflows.models import Submission

        return Submission.objects.order_by("-id").values_list("id", flat=True).first() or 0

    def cpu_snapshot(self) -> dict:
        snap = {f"worker{i}": group_cpu(p.pid) for i, p in enumerate(self.workers, 1)}
        snap["model server"] = group_cpu(self.model.pid)
        t = os.times()
        snap["driver (creates submissions)"] = t.user + t.system
        pids = {pid for smp in self.sampler.samples for pid in smp.backend_pids} if self.sampler else set()
        snap["_pg"] = pids_cpu(pids)
        snap["redis-server"] = named_cpu("redis-server")
        snap["_machine"] = machine_cpu()
        return snap

    # --- warm-up ---

    def warm_up(self) -> None:
        from django.db import connection

        model_control(self.model_url, "/bench/delay?seconds=0")
        floor = self.max_submission_id()
        n = 10 * len(self.workers)
        for i in range(n):
            self.create(i, "warm-up")
        done, failed = self.wait_done(floor, n, 60)
        r = self.redis()
        key = f"{self.namespace}bench:warm"
        for _ in range(n):
            self.send("bench.noop", [key])
        deadline = time.monotonic() + 30
        while r.llen(key) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        r.delete(key)
        connection.close()
        say(f"warm-up: {done} drafts routed, {failed} failed; {n} no-op tasks")

    # --- figure 1 ---

    def figure1(self) -> dict:
        import psycopg
        from django.db import connection, transaction

        from workflows.models import AuditEvent, Submission

        a = self.args
        say(f"\n=== Figure 1: commit -> routed, instant model, {a.latency_samples} submissions one at a time, "
            "interleaved with no-op task round trips ===")
        model_control(self.model_url, "/bench/delay?seconds=0")
        with connection.cursor() as cursor:
            cursor.execute("""
                CREATE OR REPLACE FUNCTION bench_notify_routed() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN PERFORM pg_notify('bench_routed', NEW.id::text || ' ' || NEW.state); RETURN NEW; END $$;
                DROP TRIGGER IF EXISTS bench_routed ON workflows_submission;
                CREATE TRIGGER bench_routed AFTER UPDATE OF state ON workflows_submission FOR EACH ROW
                WHEN (OLD.state = 'generating' AND NEW.state <> 'generating') EXECUTE FUNCTION bench_notify_routed();
            """)
        listener = psycopg.connect(self.db_url, autocommit=True, application_name="bench-listener")
        listener.execute("LISTEN bench_routed")
        r = self.redis()
        rd_ms, bare_ms, states, ids = [], [], collections.Counter(), []
        self.sampler.phase = "figure1"
        try:
            for i in range(a.latency_samples):
                marks: list[float] = []
                with transaction.atomic():
                    # Registered before submission_create's own on_commit (the enqueue), so it
                    # runs first, right after COMMIT.
                    transaction.on_commit(lambda: marks.append(time.perf_counter()))
                    sub = self.create(i, "latency")
                routed_at = None
                for note in listener.notifies(timeout=30):
                    pk, state = note.payload.split()
                    if int(pk) == sub.pk:
                        routed_at = time.perf_counter()
                        states[state] += 1
                        break
                if routed_at is None:
                    states["timed out"] += 1
                else:
                    rd_ms.append((routed_at - marks[0]) * 1000)
                ids.append(sub.pk)
                key = f"{self.namespace}bench:noop:{i}"
                t0 = time.perf_counter()
                self.send("bench.noop", [key])
                if r.blpop([key], timeout=30):
                    bare_ms.append((time.perf_counter() - t0) * 1000)
                r.delete(key)
        finally:
            self.sampler.phase = "after-figure1"
            listener.close()
            with connection.cursor() as cursor:
                cursor.execute("DROP TRIGGER IF EXISTS bench_routed ON workflows_submission")
        # Cross-check from the rows: submission.created_at (set before its INSERT) -> the
        # draft.routed audit event's created_at (set inside the worker's transaction).
        created = dict(Submission.objects.filter(pk__in=ids).values_list("pk", "created_at"))
        routed = {int(o): t for o, t in AuditEvent.objects.filter(
            action="draft.routed", object_type="submission", object_id__in=[str(i) for i in ids]
        ).values_list("object_id", "created_at")}
        rows_ms = [(routed[pk] - created[pk]).total_seconds() * 1000 for pk in ids if pk in routed]
        fig = {
            "rd": rd_ms, "bare": bare_ms, "rows": rows_ms, "states": states,
            "rd50": pct(rd_ms, .5), "rd95": pct(rd_ms, .95), "bare50": pct(bare_ms, .5), "bare95": pct(bare_ms, .95),
        }
        say(f"  ReviewDesk commit -> routed (NOTIFY at the worker's COMMIT): n={len(rd_ms)} "
            f"p50 {fig['rd50']:.1f} ms  p95 {fig['rd95']:.1f} ms  max {max(rd_ms, default=float('nan')):.1f} ms; "
            f"end states {dict(states)}")
        say(f"  from the rows (submission.created_at -> draft.routed event): p50 {pct(rows_ms, .5):.1f} ms  "
            f"p95 {pct(rows_ms, .95):.1f} ms")
        say(f"  bare no-op round trip (send -> worker RPUSH -> BLPOP): n={len(bare_ms)} p50 {fig['bare50']:.1f} ms  "
            f"p95 {fig['bare95']:.1f} ms  max {max(bare_ms, default=float('nan')):.1f} ms")
        connection.close()
        return fig

    # --- figure 2 ---

    # --- figure 2 ---

    def _control(self, command: str) -> None:
        """Stop (cancel_consumer) or start (add_consumer) every worker consuming the llm queue,
        so a whole batch can wait in the broker and be released at once."""
        from reviewdesk.celery import app

        names = [p.name for p in self.workers]
        replies = getattr(app.control, command)(self.queues()[0], destination=names, reply=True, timeout=5)
        if len(replies) != len(names):
            raise SystemExit(f"bench: {command} answered by {len(replies)} of {len(names)} workers: {replies}")

    def _window_start(self, phase: str) -> dict:
        self.sampler.phase = phase
        return {"phase": phase, "cpu": self.cpu_snapshot(), "t": time.time()}

    def _window_end(self, window: dict, units: int, unit: str) -> dict:
        cpu_after = self.cpu_snapshot()
        self.sampler.phase = "idle"
        samples = self.sampler.of(window["phase"])
        stats = {
            "max_conn": max((s.counted for s in samples), default=0),
            "max_workers": max((s.workers for s in samples), default=0),
            "max_driver": max((s.by_app.get("bench-driver", 0) for s in samples), default=0),
            "max_advisory": max((s.advisory_waiting for s in samples), default=0),
            "mean_advisory": sum(s.advisory_waiting for s in samples) / len(samples) if samples else 0.0,
            "mean_active": sum(s.active for s in samples) / len(samples) if samples else 0.0,
            "holder": collections.Counter(s.lock_holder for s in samples),
        }
        before, seconds = window["cpu"], time.time() - window["t"]
        units = max(units, 1)
        say(f"  CPU over {seconds:.1f} s wall ({os.cpu_count()} cores), per {unit}:")
        known = 0.0
        parts = []
        for key in before:
            if key.startswith("_"):
                continue
            used = cpu_after[key] - before[key]
            known += used
            parts.append(f"{key} {used / units * 1000:.2f} ms")
        # Backends of the bench database: those seen by the sampler up to now; one born during
        # the window counts from zero.
        pg_after = pids_cpu({pid for smp in self.sampler.samples for pid in smp.backend_pids})
        bench_pg = sum(v - before["_pg"].get(pid, 0.0) for pid, v in pg_after.items())
        known += bench_pg
        parts.append(f"postgres (bench db backends) {bench_pg / units * 1000:.2f} ms")
        say("    " + "; ".join(parts))
        (b0, t0, k0), (b1, t1, k1) = before["_machine"], cpu_after["_machine"]
        busy, total, kernel = b1 - b0, t1 - t0, k1 - k0
        say(f"    machine busy {busy:.2f} s of {total:.2f} s ({100 * busy / total if total else 0:.0f}%), "
            f"{busy / units * 1000:.2f} ms per {unit} in all; of it kernel (system+irq+softirq) {kernel:.2f} s; "
            f"processes outside this bench (other test runs, postgres background writers, ...) "
            f"{max(busy - known, 0.0):.2f} s")
        stats["cpu_ms"] = busy / units * 1000
        stats["own_cpu_ms"] = min(known, busy) / units * 1000
        stats["busy_pct"] = 100 * busy / total if total else 0.0
        return stats

    def figure2_baseline(self) -> dict:
        a = self.args
        r = self.redis()
        key = f"{self.namespace}bench:sleep"
        r.delete(key)
        self._control("cancel_consumer")
        for _ in range(a.drafts):
            self.send("bench.sleep", [a.model_delay, key])
        window = self._window_start("figure2-bare")
        started = time.time()
        self._control("add_consumer")
        deadline = time.monotonic() + a.fig2_timeout
        while r.llen(key) < a.drafts and time.monotonic() < deadline:
            time.sleep(0.1)
        ends = [float(x) for x in r.lrange(key, 0, -1)]
        r.delete(key)
        elapsed = (max(ends) - started) if ends else float("nan")
        rate = len(ends) / elapsed if ends else 0.0
        say(f"  bare {a.model_delay:g}-second tasks, {a.drafts} queued then released: {len(ends)} done in "
            f"{elapsed:.2f} s -> {rate:.1f} tasks/s")
        stats = self._window_end(window, len(ends), "task")
        return {"rate": rate, "done": len(ends), "elapsed": elapsed, **stats}

    def _create_many(self, n: int, label: str) -> tuple[float, list[str]]:
        """Create ``n`` submissions through services.submission_create from --creators threads
        (each enqueues its own generation on commit); return (seconds, errors)."""
        from django.db import connection, connections

        connection.close()  # back to the driver's pool: every creator thread needs one
        errors: list[str] = []

        def creator(indices):
            try:
                for i in indices:
                    self.create(i, label)
            except Exception as exc:  # reported, not raised: the bench goes on and says so
                errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                connections.close_all()

        threads = [threading.Thread(target=creator, args=(range(k, n, self.args.creators),))
                   for k in range(self.args.creators)]
        started = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.time() - started, errors

    def figure2_reviewdesk(self, mode: str) -> dict:
        """``burst``: the submissions are created while the workers do not consume the llm queue,
        then released at once (the clock starts then), like the bare tasks. ``live``: created
        while the workers consume (the clock starts with the first create), so the creation
        rate of this one driver process is part of the figure."""
        from django.db import connection

        from workflows import audit
        from workflows.models import AuditEvent, Submission

        a = self.args
        model_control(self.model_url, f"/bench/delay?seconds={a.model_delay}")
        model_control(self.model_url, "/bench/stats")
        floor = self.max_submission_id()
        timeline: list[tuple[float, int]] = []
        phase = f"figure2-{mode}"
        spies = []
        if mode == "burst":
            self._control("cancel_consumer")
            create_seconds, errors = self._create_many(a.drafts, mode)
            if a.py_spy:
                spies = [subprocess.Popen([a.py_spy, "record", *a.py_spy_args.split(), "-f", "raw", "-o",
                                           str(self.logdir / f"{w.name.split('@')[0]}.stacks"), "--pid", str(w.pid)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                         for w in self.workers]
                time.sleep(1)
            window = self._window_start(phase)
            started = time.time()
            self._control("add_consumer")
        else:
            window = self._window_start(phase)
            started = time.time()

        def watch():
            while self.sampler.phase == phase:
                timeline.append((time.time() - started, model_control(self.model_url, "/bench/stats")["in_flight"]))
                time.sleep(0.25)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        if mode == "live":
            create_seconds, errors = self._create_many(a.drafts, mode)
        done, failed = self.wait_done(floor, a.drafts, a.fig2_timeout)
        new = Submission.objects.filter(pk__gt=floor)
        ids = list(new.values_list("pk", flat=True))
        routed_events = dict(AuditEvent.objects.filter(
            action="draft.routed", object_type="submission", object_id__in=[str(i) for i in ids]
        ).values_list("object_id", "created_at"))
        ends = [t.timestamp() for t in routed_events.values()]
        elapsed = (max(ends) - started) if ends else float("nan")
        rate = len(ends) / elapsed if ends else 0.0
        samples = self.sampler.of(phase)
        stats = self._window_end(window, len(ends), "draft")
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(timeout=30)
        if spies:
            say(f"  py-spy stacks of the workers in {self.logdir}")
        watcher.join()
        model_max = model_control(self.model_url, "/bench/stats")["max_in_flight"]
        by_state = collections.Counter(new.values_list("state", flat=True))
        lanes = collections.Counter(new.values_list("lane", flat=True))
        unrouted = by_state.get("submitted", 0) + by_state.get("generating", 0)
        created = dict(new.values_list("pk", "created_at"))
        lat = [(routed_events[str(pk)] - created[pk]).total_seconds() for pk in ids if str(pk) in routed_events]
        chain = audit.verify_chain()
        say(f"  ReviewDesk ({mode}): {len(ends)}/{a.drafts} routed in {elapsed:.2f} s -> {rate:.1f} drafts/s; "
            f"{a.creators} threads created the {a.drafts} submissions in {create_seconds:.2f} s "
            f"({a.drafts / create_seconds:.0f}/s{', workers paused' if mode == 'burst' else ', workers running'})"
            + (f"; creator errors: {errors[:3]}" if errors else ""))
        say(f"  states {dict(by_state)}, lanes {dict(lanes)}; unrouted {unrouted}, failed {failed}")
        say(f"  per submission created -> routed: p50 {pct(lat, .5):.2f} s  p95 {pct(lat, .95):.2f} s  "
            f"max {max(lat, default=float('nan')):.2f} s")
        say(f"  model requests in flight: max {model_max}; PostgreSQL connections to the bench db: max "
            f"{stats['max_conn']} (workers {stats['max_workers']}, driver {stats['max_driver']}); sessions waiting "
            f"on the audit-chain advisory lock: max {stats['max_advisory']}, mean {stats['mean_advisory']:.1f}; "
            f"active sessions mean {stats['mean_active']:.1f}")
        say(f"  audit chain after the run: {'intact' if chain.ok else 'BROKEN at ' + str(chain.broken_at)} "
            f"({chain.checked} events)")
        holder = stats["holder"]
        if holder:
            total = sum(holder.values())
            say("  audit-chain advisory lock, sampled every 50 ms: " + "; ".join(
                f"{100 * n / total:.0f}% {what}" for what, n in holder.most_common()))
        say("  timeline (second: routed so far | model calls in flight | PG connections | advisory-lock waiters):")
        line = []
        step = max(1, int(elapsed) // 12) if elapsed == elapsed else 1
        for second in range(0, int(elapsed if elapsed == elapsed else 0) + 1, step):
            routed_by = sum(1 for t in ends if t - started <= second)
            inflight = max((n for t, n in timeline if second - 0.5 <= t <= second + 0.5), default=0)
            near = [s for s in samples if abs(s.t - started - second) <= 0.5]
            line.append(f"{second}s:{routed_by}|{inflight}|{max((s.counted for s in near), default=0)}|"
                        f"{max((s.advisory_waiting for s in near), default=0)}")
        say("   " + "  ".join(line))
        connection.close()
        model_control(self.model_url, "/bench/delay?seconds=0")
        return {"rate": rate, "done": len(ends), "unrouted": unrouted, "failed": failed, "elapsed": elapsed,
                "model_max": model_max, "chain_ok": chain.ok, "p95_latency": pct(lat, .95),
                "create_rate": a.drafts / create_seconds, **stats}

    def worker_log_summary(self) -> dict:
        counts = collections.Counter()
        for proc in self.workers:
            if not proc.log_path or not proc.log_path.exists():
                continue
            for line in proc.log_path.read_text(errors="replace").splitlines():
                if " retry: Retry in " in line or "Retry in" in line:
                    counts["task retried"] += 1
                if "PoolTimeout" in line or "couldn't get a connection" in line:
                    counts["pool timeout"] += 1
                if " ERROR " in line or "] ERROR" in line or "ERROR/" in line:
                    counts["error lines"] += 1
                if "Traceback" in line:
                    counts["tracebacks"] += 1
        return dict(counts)

    # --- teardown ---

    def cleanup(self) -> None:
        if self.sampler:
            self.sampler.stop_event.set()
        for proc in self.workers:
            proc.stop()
        if self.model:
            self.model.stop(timeout=3)
        with contextlib.suppress(Exception):
            from django.db import connections

            for conn in connections.all(initialized_only=True):
                conn.close()
                if hasattr(conn, "close_pool"):
                    with contextlib.suppress(Exception):
                        conn.close_pool()
        with contextlib.suppress(Exception):
            r = self.redis()
            # This run's names; and keys naming this run's fake model (127.0.0.1:<its port>),
            # which a breaker that does not follow REVIEWDESK_NAMESPACE would leave.
            patterns = [f"*{self.namespace}*"]
            if self.model_url:
                patterns.append(f"*{urlsplit(self.model_url).netloc}:*")
            for pattern in patterns:
                for key in r.scan_iter(match=pattern, count=1000):
                    r.delete(key)
            for key in r.scan_iter(match="_kombu.binding.*", count=1000):
                mine = [m for m in r.smembers(key) if self.namespace in m]
                if mine:
                    r.srem(key, *mine)
        if self.db_created and not self.args.keep:
            import psycopg

            with contextlib.suppress(Exception):
                with psycopg.connect(self.admin_url, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        elif self.db_created:
            say(f"kept database {self.dbname} (--keep)")

    # --- main ---

    def run(self) -> int:
        a = self.args
        started = time.monotonic()
        say(f"load average at start: {Path('/proc/loadavg').read_text().split()[:3]} ({os.cpu_count()} cores; "
            "other processes on the machine, e.g. a test run, lower every figure)")
        try:
            self.setup()
            profile = print_statement_profile(statement_profile(self.version, self.user))
            self.purge()
            self.sampler = PgSampler(self.admin_url, self.dbname)
            self.sampler.start()
            self.start_workers()
            self.warm_up()
            fig1 = self.figure1()
            say(f"\n=== Figure 2: throughput, model answering in {a.model_delay:g} s, {a.drafts} submissions, "
                f"{a.workers} x -P {a.pool} -c {a.concurrency} ===")
            bare = self.figure2_baseline()
            fig2 = self.figure2_reviewdesk("burst")
            live = self.figure2_reviewdesk("live") if a.live else None
            logs = self.worker_log_summary()
            say(f"  worker logs: {logs or 'no retries, no errors'}")
        finally:
            self.cleanup()
        if logs or a.keep or a.py_spy:
            say(f"worker logs kept in {self.logdir}")
        else:
            shutil.rmtree(self.logdir, ignore_errors=True)
        self.table(fig1, bare, fig2, live, profile, logs)
        say(f"\nbench finished in {time.monotonic() - started:.0f} s")
        return 0

    def table(self, fig1, bare, fig2, live, profile, logs) -> None:
        a = self.args
        res = self.result
        ratio = lambda x, y: f"{x / y:.2f}x" if y and y == y and x == x else "-"  # noqa: E731
        res.add("commit->routed p50, instant model", f"{fig1['rd50']:.1f} ms", f"{fig1['bare50']:.1f} ms",
                ratio(fig1["rd50"], fig1["bare50"]))
        res.add("commit->routed p95, instant model", f"{fig1['rd95']:.1f} ms", f"{fig1['bare95']:.1f} ms",
                ratio(fig1["rd95"], fig1["bare95"]))
        over50 = fig1["rd50"] - fig1["bare50"]
        over95 = fig1["rd95"] - fig1["bare95"]
        res.add("pipeline overhead p50 (RD - bare)", f"{over50:.1f} ms", "0", "")
        res.add("pipeline overhead p95 (RD - bare)", f"{over95:.1f} ms", "0", "", f"<= {OVERHEAD_TARGET_MS:.0f} ms",
                over95 <= OVERHEAD_TARGET_MS)
        res.add(f"drafts/s, {a.model_delay:g} s model, {a.drafts} queued", f"{fig2['rate']:.1f}/s",
                f"{bare['rate']:.1f}/s", ratio(fig2["rate"], bare["rate"]), f">= {DRAFTS_TARGET:.0f}/s",
                fig2["rate"] >= DRAFTS_TARGET)
        res.add("CPU per draft / per bare task (this bench)", f"{fig2['own_cpu_ms']:.1f} ms",
                f"{bare['own_cpu_ms']:.1f} ms", ratio(fig2["own_cpu_ms"], bare["own_cpu_ms"]))
        res.add("CPU busy during the run (whole machine)", f"{fig2['busy_pct']:.0f}%", f"{bare['busy_pct']:.0f}%")
        if live:
            res.add(f"drafts/s, created live by {a.creators} threads", f"{live['rate']:.1f}/s", f"{bare['rate']:.1f}/s",
                    ratio(live["rate"], bare["rate"]), "(info)")
        runs = [r for r in (fig2, live) if r]
        max_conn = max(r["max_conn"] for r in runs + [bare])
        res.add("PostgreSQL connections, max", str(max_conn), "", "", f"<= {CONNECTIONS_TARGET}",
                max_conn <= CONNECTIONS_TARGET)
        unrouted = sum(r["unrouted"] for r in runs)
        failed = sum(r["failed"] for r in runs)
        res.add("submissions left unrouted", str(unrouted), "", "", "0", unrouted == 0)
        res.add("submissions failed", str(failed), "", "", "0", failed == 0)
        chain_ok = all(r["chain_ok"] for r in runs)
        res.add("audit chain after the run", "intact" if chain_ok else "BROKEN", "", "", "intact", chain_ok)
        res.add("SQL statements per draft (claim+record)", str(profile["task"]), "", "",
                f"(+{profile['create']} to create)")
        headers = ("figure", "ReviewDesk", "baseline", "ratio", "target", "")
        widths = [max(len(str(r[i])) for r in [headers, *res.rows]) for i in range(6)]
        rule = "+".join("-" * (w + 2) for w in widths)
        say("\n" + "=" * len(rule))
        say(f"ReviewDesk bench: {a.workers} worker(s) x -P {a.pool} -c {a.concurrency}, "
            f"REVIEWDESK_DB_POOL_MAX={self.pool_sizes()[0]} per worker (+{self.pool_sizes()[1]} driver), "
            f"{os.cpu_count()} cores")
        if a.pg_set or a.switch_interval or a.worker_python != sys.executable:
            say(f"DIAGNOSTIC settings, not the deployment's: {a.pg_set or ''} "
                f"{'switch interval ' + str(a.switch_interval) if a.switch_interval else ''} "
                f"{'workers run ' + a.worker_python if a.worker_python != sys.executable else ''}")
        say("=" * len(rule))
        for row in [headers, *res.rows]:
            say(" | ".join(str(v).ljust(w) for v, w in zip(row, widths)))
            if row is headers:
                say(rule)
        missed = [r[0] for r in res.rows if r[5] == "MISSED"]
        say("=" * len(rule))
        if missed:
            say("!!! MISSED: " + "; ".join(missed) + " !!!")
        else:
            say("all targets met")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="ReviewDesk benchmark (make bench)")
    p.add_argument("--pool", default="threads", choices=["threads", "prefork", "gevent", "eventlet", "solo"])
    p.add_argument("--concurrency", type=int, default=200, help="per worker process")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--max-connections", type=int, default=CONNECTIONS_TARGET,
                   help="PostgreSQL budget the pools are sized to (workers + driver)")
    p.add_argument("--driver-pool", type=int, default=4, help="the driver's pool (it stands in for the web)")
    p.add_argument("--db-pool-max", type=int, default=0, help="REVIEWDESK_DB_POOL_MAX per worker (0: from the budget)")
    p.add_argument("--creators", type=int, default=4, help="threads creating submissions in figure 2")
    p.add_argument("--latency-samples", type=int, default=200)
    p.add_argument("--drafts", type=int, default=1000)
    p.add_argument("--model-delay", type=float, default=2.0)
    p.add_argument("--fig2-timeout", type=float, default=180.0)
    p.add_argument("--no-live", dest="live", action="store_false",
                   help="skip the second throughput run, with submissions created while the workers consume")
    p.add_argument("--keep", action="store_true", help="keep the bench database and the worker logs")
    p.add_argument("--pg-set", metavar="NAME=VALUE", action="append", default=[],
                   help="diagnostic: ALTER DATABASE <bench db> SET NAME=VALUE (e.g. synchronous_commit=off)")
    p.add_argument("--switch-interval", type=float, default=0.0,
                   help="diagnostic: sys.setswitchinterval() in the workers (Python's default is 0.005)")
    p.add_argument("--worker-python", metavar="PATH", default=sys.executable,
                   help="interpreter for the workers (e.g. a venv that also has gevent, for --pool gevent)")
    p.add_argument("--py-spy", metavar="PATH", default="",
                   help="py-spy binary: record each worker during the burst run (collapsed stacks in the log dir)")
    p.add_argument("--py-spy-args", default="--nonblocking -r 50",
                   help="py-spy record options (e.g. '--gil -r 200': only the thread holding the GIL, i.e. "
                        "where the workers' Python CPU goes)")
    args = p.parse_args(argv)
    if args.creators > args.driver_pool:
        p.error("--creators must not exceed --driver-pool (each creator thread holds one connection)")
    return args


def main(argv=None) -> int:
    return Bench(parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
