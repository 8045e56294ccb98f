"""The audit chain at scale, measured: ``python -m tests.bench.bench_chain [--events 1000000]``.

Not a test (pytest never collects it); it measures and exits 0, printing MISSED next to a target
it misses. In its own database (reviewdesk_benchchain_<pid>, created, migrated and dropped):

1. Loads --events audit events with a valid chain: seq and hashes are computed here in Python
   with the app's encoding, and the rows go in with COPY (the append-only triggers stay in place:
   they refuse UPDATE and DELETE, and let only the table owner, as here, insert linked rows).
2. verify_audit's walk (workflows.audit.walk_chain, what ``manage.py verify_audit`` runs) over
   them in events/s, against a raw walk of the same rows (the same server-side cursor, no
   hashing) in the same run.
3. Audit appends/s with 1, 4 and 16 writer threads, each append its own transaction through
   audit.record_standalone (since migration 0012 an unchained INSERT: no lock, no head read),
   against plain inserts of the same rows into a copy of the table without its indexes and
   triggers; p95 of the append call, and how often a session was waiting on an advisory lock
   (pg_locks sampled every 10 ms: nobody should be). Meanwhile one chainer thread links what is
   committed (audit.chain_all every 0.2 s, as the chain_audit task does): the largest number of
   events waiting and the oldest wait seen (sampled every 10 ms) say whether it keeps up.
4. The chainer alone: --chain-backlog unchained events linked by audit.chain_now, in events/s.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import secrets
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/postgres"
VERIFY_TARGET = 100_000.0
WRITERS = (1, 4, 16)


def say(text: str = "") -> None:
    print(text, flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def load_events(n: int) -> None:
    """n events with a valid chain, hashed here, loaded with COPY."""
    from django.db import connection

    from workflows import audit

    t0 = time.monotonic()
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    prev = audit.GENESIS_HASH
    encode, sha256 = audit._encode, hashlib.sha256
    actions = ("submission.created", "draft.generated", "draft.routed", "review.approved", "output.released")
    connection.ensure_connection()
    with connection.connection.cursor() as cursor, cursor.copy(
        "COPY workflows_auditevent (created_at, actor_id, actor_label, action, object_type, object_id, "
        "workflow_version_id, payload, request_id, ip, seq, prev_hash, hash) FROM STDIN"
    ) as copy:
        for i in range(n):
            created = start + datetime.timedelta(microseconds=i * 1013)
            payload = {"attempt": 1, "content_hash": hashlib.md5(str(i).encode()).hexdigest(),
                       "lane": "async_review", "score": round((i % 100) / 100, 2)}
            fields = {
                "created_at": created.isoformat(), "actor": "system", "actor_id": None,
                "action": actions[i % 5], "object_type": "submission", "object_id": str(i // 5),
                "workflow_version": None, "payload": payload, "request_id": f"req-{i // 5}",
                "ip": "10.0.0.1",
            }
            digest = sha256((prev + encode(fields)).encode()).hexdigest()
            copy.write_row((created, None, "system", fields["action"], "submission", fields["object_id"], None,
                            encode(payload), fields["request_id"], "10.0.0.1", i + 1, prev, digest))
            prev = digest
    connection.commit() if not connection.get_autocommit() else None
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE workflows_auditevent")
    say(f"loaded {n:,} chained events with COPY in {time.monotonic() - t0:.1f} s")


def raw_walk() -> tuple[int, float]:
    from django.db import connection, transaction

    from workflows import audit

    t0 = time.monotonic()
    rows = 0
    with transaction.atomic():
        with connection.connection.cursor(name="bench_raw_walk") as cursor:
            cursor.execute(audit._WALK_SQL, [0, 2**62])
            while batch := cursor.fetchmany(audit._WALK_BATCH):
                rows += len(batch)
    return rows, time.monotonic() - t0


def verify_walk() -> tuple[int, float, bool]:
    from workflows import audit

    t0 = time.monotonic()
    walk = audit.walk_chain()
    return walk.checked, time.monotonic() - t0, walk.ok


class LockSampler(threading.Thread):
    """Every 10 ms: is any session waiting for an advisory lock in this database? And how many
    events wait to be linked, since when (the chainer's lag)?"""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.samples, self.waiting = url, 0, 0
        self.max_unchained, self.max_lag = 0, 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                waiting = conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                ).fetchone()[0]
                unchained, lag = conn.execute(
                    "SELECT count(*), COALESCE(extract(epoch FROM now() - min(created_at)), 0) "
                    "FROM workflows_auditevent WHERE seq IS NULL").fetchone()
                self.samples += 1
                self.waiting += bool(waiting)
                self.max_unchained = max(self.max_unchained, unchained)
                self.max_lag = max(self.max_lag, float(lag))
                time.sleep(0.01)


class Chainer(threading.Thread):
    """What the chain_audit task does, every 0.2 s (the commit trigger's interval)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop, self.linked = threading.Event(), 0

    def run(self) -> None:
        from django.db import connections

        from workflows import audit

        try:
            while not self.stop.is_set():
                self.linked += audit.chain_all()
                time.sleep(0.2)
        finally:
            connections.close_all()


def run_writers(writers: int, seconds: float, chained: bool, url: str) -> dict:
    from django.db import connection, connections, transaction

    from workflows import audit

    latencies: list[list[float]] = [[] for _ in range(writers)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(writers + 1)
    deadline: list[float] = [0.0]

    def insert_unchained(n: int, i: int) -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO bench_unchained (created_at, actor_id, actor_label, action, object_type, object_id, "
                "workflow_version_id, payload, request_id, ip, prev_hash, hash) "
                "VALUES (now(), NULL, 'system', 'auth.denied', 'writer', %s, NULL, %s, '', NULL, %s, %s)",
                [str(n), audit.canonical_json({"writer": n, "i": i}), audit.GENESIS_HASH, audit.GENESIS_HASH],
            )

    def work(n: int) -> None:
        mine = latencies[n]
        try:
            barrier.wait()
            i = 0
            while time.monotonic() < deadline[0]:
                t = time.perf_counter()
                if chained:
                    audit.record_standalone(action="auth.denied", object_type="writer", object_id=n,
                                            payload={"writer": n, "i": i})
                else:
                    insert_unchained(n, i)
                mine.append(time.perf_counter() - t)
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    sampler = LockSampler(url)
    sampler.start()
    chainer = Chainer() if chained else None
    if chainer:
        chainer.start()
    deadline[0] = time.monotonic() + seconds
    t0 = time.monotonic()
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - t0
    sampler.stop.set()
    sampler.join()
    if chainer:
        chainer.stop.set()
        chainer.join()
        # What the last writers committed after the chainer's last pass: linked now, so the next
        # run's lag samples do not see it aging while that run starts.
        audit.chain_now()
        connections.close_all()
    if errors:
        raise errors[0]
    flat = [x for mine in latencies for x in mine]
    return {"per_s": len(flat) / elapsed, "p95_ms": pct(flat, 0.95) * 1000,
            "waiting": sampler.waiting / max(1, sampler.samples), "max_unchained": sampler.max_unchained,
            "max_lag_s": sampler.max_lag}


def chain_backlog(n: int) -> tuple[int, float]:
    """n unchained events (COPY), then linked by audit.chain_now: (linked, seconds)."""
    from django.db import connection

    from workflows import audit

    connection.ensure_connection()
    with connection.connection.cursor() as cursor, cursor.copy(
        "COPY workflows_auditevent (created_at, actor_label, action, object_type, object_id, payload, request_id) "
        "FROM STDIN"
    ) as copy:
        now = datetime.datetime.now(datetime.UTC)
        for i in range(n):
            copy.write_row((now, "system", "draft.routed", "submission", str(i),
                            audit.canonical_json({"lane": "auto_approve", "score": 0.9, "i": i}), f"req-{i}"))
    connection.commit() if not connection.get_autocommit() else None
    t0 = time.monotonic()
    linked = audit.chain_now(timeout=600)
    return linked, time.monotonic() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per append measurement")
    parser.add_argument("--chain-backlog", type=int, default=50_000, help="events the chainer links alone")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL))
    args = parser.parse_args(argv)

    import psycopg

    dbname = f"reviewdesk_benchchain_{os.getpid()}"
    db_url = with_db(args.pg_url, dbname)
    with psycopg.connect(args.pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    try:
        os.environ.update({
            "DATABASE_URL": db_url, "DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": secrets.token_hex(32),
            "DJANGO_ALLOWED_HOSTS": "localhost", "DJANGO_SETTINGS_MODULE": "reviewdesk.settings",
            "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"),
            "REVIEWDESK_NAMESPACE": f"benchchain{os.getpid()}.", "REVIEWDESK_DB_POOL_MAX": "40",
            "REVIEWDESK_LOG_LEVEL": "WARNING", "PGAPPNAME": "bench-chain",
        })
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        with open(os.devnull, "w") as devnull:
            call_command("migrate", verbosity=0, interactive=False, stdout=devnull)
        load_events(args.events)
        rows, raw_s = raw_walk()
        checked, verify_s, ok = verify_walk()
        verify_rate, raw_rate = checked / verify_s, rows / raw_s
        say(f"verify: {checked:,} events in {verify_s:.2f} s ({'ok' if ok else 'BROKEN'}); "
            f"raw walk {rows:,} rows in {raw_s:.2f} s")

        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE bench_unchained (LIKE workflows_auditevent INCLUDING DEFAULTS)")
            cursor.execute("CREATE SEQUENCE bench_unchained_id OWNED BY bench_unchained.id")
            cursor.execute("ALTER TABLE bench_unchained ALTER id SET DEFAULT nextval('bench_unchained_id'), "
                           "ADD PRIMARY KEY (id)")
        connection.close()
        appends = {}
        for writers in WRITERS:
            chained = run_writers(writers, args.seconds, True, db_url)
            plain = run_writers(writers, args.seconds, False, db_url)
            appends[writers] = (chained, plain)
            say(f"{writers:>2} writers: {chained['per_s']:,.0f} appends/s (p95 {chained['p95_ms']:.1f} ms, a session "
                f"waiting on an advisory lock in {chained['waiting']:.0%} of samples; chainer lag: at most "
                f"{chained['max_unchained']:,} events waiting, oldest {chained['max_lag_s']:.2f} s) vs "
                f"{plain['per_s']:,.0f} plain inserts/s (p95 {plain['p95_ms']:.1f} ms)")
        from workflows import audit

        audit.chain_now(timeout=600)
        linked, chain_s = chain_backlog(args.chain_backlog)
        say(f"chainer alone: {linked:,} events linked in {chain_s:.2f} s ({linked / chain_s:,.0f} events/s)")

        final = audit.walk_chain()
        say(f"chain after the appends: {'ok' if final.ok else 'BROKEN at ' + str(final.broken_at)}, "
            f"{final.checked:,} events")

        say()
        say(f"{'figure':<44} {'ReviewDesk':>12} {'baseline':>12} {'ratio':>7}  target")
        missed = "" if verify_rate >= VERIFY_TARGET else "  MISSED"
        say(f"{'verify_audit, events/s (vs raw walk)':<44} {verify_rate:>12,.0f} {raw_rate:>12,.0f} "
            f"{verify_rate / raw_rate:>7.2f}  >= {VERIFY_TARGET:,.0f}/s{missed}")
        for writers, (chained, plain) in appends.items():
            say(f"{f'appends/s, {writers} writers (vs unchained)':<44} {chained['per_s']:>12,.0f} "
                f"{plain['per_s']:>12,.0f} {chained['per_s'] / plain['per_s']:>7.2f}  (information)")
        for writers, (chained, plain) in appends.items():
            say(f"{f'p95 append, ms, {writers} writers':<44} {chained['p95_ms']:>12.1f} "
                f"{plain['p95_ms']:>12.1f} {chained['p95_ms'] / plain['p95_ms']:>7.2f}  (information)")
        for writers, (chained, _plain) in appends.items():
            say(f"{f'chainer lag, oldest unchained s, {writers} wr.':<44} {chained['max_lag_s']:>12.2f} "
                f"{'':>12} {'':>7}  ~1 s")
        say(f"{'chainer alone, events linked/s':<44} {linked / chain_s:>12,.0f} {'':>12} {'':>7}  (information)")
    finally:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 - django may not be set up
            pass
        with psycopg.connect(args.pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
