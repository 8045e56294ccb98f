"""The audit chainer (design (b), migration 0012): events are inserted unchained in the
transaction of their change, and one chainer at a time links the committed ones, on real
PostgreSQL, with real threads, a real worker and a real process killed mid-batch."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction

from tests.conftest import wait_for
from workflows import audit
from workflows.audit_export import Export, write_export
from workflows.models import AuditEvent

ROOT = Path(__file__).resolve().parents[2]
VERIFY = ROOT / "tools" / "verify_export.py"


@pytest.fixture
def no_trigger(monkeypatch):
    """Commits do not send the chain task here, so no worker of this run links these events
    behind the test's back: the test runs the chainer itself."""
    monkeypatch.setattr(audit, "request_chaining", lambda: None)


def _record(n: int | str, **payload) -> AuditEvent:
    return audit.record_standalone(action="auth.denied", object_type="chainer", object_id=n, payload=payload)


def _seqs() -> list[int]:
    return list(AuditEvent.objects.filter(seq__isnull=False).order_by("seq").values_list("seq", flat=True))


def _database_url() -> str:
    base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    return f"{base}/{connection.settings_dict['NAME']}"


# --- writers never wait for the chain -------------------------------------------------------


def test_an_append_takes_no_chain_lock_and_reads_no_head(db, django_assert_max_num_queries):
    with django_assert_max_num_queries(3) as queries:  # SAVEPOINT, INSERT, RELEASE
        event = _record(1)
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    assert "advisory" not in sql and "ORDER BY" not in sql
    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.seq, stored.prev_hash, stored.hash) == (None, None, None)


def test_twenty_concurrent_writers_and_racing_chainers_leave_one_unbroken_chain(no_trigger, transactional_db):
    writers, per_writer, errors = 20, 10, []
    start = threading.Barrier(writers)

    def write(n: int) -> None:
        try:
            start.wait()
            for i in range(per_writer):
                _record(n, i=i)
                if n % 2 == 0:
                    audit.chain_all()  # ten chainers racing the writers and each other
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    audit.chain_now()
    total = writers * per_writer
    assert _seqs() == list(range(1, total + 1))  # one chain position each, no gap, no fork
    walk = audit.walk_chain()
    assert walk.ok and walk.checked == total and walk.head_seq == total
    prevs = list(AuditEvent.objects.values_list("prev_hash", flat=True))
    assert len(set(prevs)) == total


def test_a_row_committed_out_of_id_order_is_chained_after_the_rows_chained_before_it(no_trigger, transactional_db):
    inserted, release, done = threading.Event(), threading.Event(), []

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                done.append(_record("late").pk)  # the lower id...
                inserted.set()
                release.wait(30)  # ...committed after the higher one was chained
        finally:
            connections.close_all()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert inserted.wait(30)
    early = _record("early")
    audit.chain_now()
    late_pk = done[0]
    assert late_pk < early.pk
    early.refresh_from_db()
    assert early.seq == 1 and early.prev_hash == audit.GENESIS_HASH
    release.set()
    thread.join()
    late = AuditEvent.objects.get(pk=late_pk)
    assert late.seq is None  # committed, waiting for the chainer
    assert audit.chain_now() == 1
    late.refresh_from_db()
    # The chain's order is seq, not id: the late row follows the early one.
    assert late.seq == 2 and late.prev_hash == early.hash and late.pk < early.pk
    walk = audit.walk_chain()
    assert walk.ok and walk.checked == 2 and walk.head_id == late.pk


def test_a_chainer_killed_mid_batch_leaves_no_partial_links_and_the_next_one_resumes(no_trigger, transactional_db):
    total = 200
    for i in range(total):
        _record(i, text=f"event {i} ✓")
    ids = list(AuditEvent.objects.order_by("id").values_list("id", flat=True))
    blocker = ids[130]  # in the third batch of 50
    url = _database_url()
    with psycopg.connect(url) as holder:
        # Hold the 131st event's row: the chainer's UPDATE of it waits, halfway through its third
        # batch, with the first 30 of that batch already linked in its open transaction.
        holder.execute("SELECT id FROM workflows_auditevent WHERE id = %s FOR UPDATE", [blocker])
        env = {**os.environ, "DATABASE_URL": url, "DJANGO_DEBUG": "true"}
        script = "from workflows import audit; audit.CHAIN_BATCH = 50; print(audit.chain_all(), flush=True)"
        chainer = subprocess.Popen([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            with psycopg.connect(url, autocommit=True) as watch:
                def waiting_backend():
                    return watch.execute(
                        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE '%%reviewdesk_audit_chain%%'").fetchone()
                (pid,) = wait_for(waiting_backend, timeout=60, message="the chainer to block mid-batch")
                assert _seqs() == list(range(1, 101))  # two batches committed
                chainer.send_signal(signal.SIGKILL)
                chainer.wait(30)
                holder.rollback()  # the backend goes on, finds its client gone and rolls back
                wait_for(lambda: watch.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                                               [pid]).fetchone() == (0,), timeout=30, message="the backend to end")
        finally:
            if chainer.poll() is None:
                chainer.kill()
            chainer.communicate()
    assert chainer.returncode == -signal.SIGKILL
    # The killed batch left nothing: 100 linked, 100 waiting, no half-linked row.
    assert _seqs() == list(range(1, 101))
    assert AuditEvent.objects.filter(seq__isnull=True, hash__isnull=False).count() == 0
    assert AuditEvent.objects.filter(seq__isnull=True).count() == 100
    assert audit.chain_now() == 100
    assert _seqs() == list(range(1, total + 1))
    walk = audit.walk_chain()
    assert walk.ok and walk.checked == total
    # In id order, as they were written (the writes here were sequential).
    assert list(AuditEvent.objects.order_by("seq").values_list("id", flat=True)) == ids


# --- the production trigger -----------------------------------------------------------------


def test_a_commit_gets_its_events_linked_by_the_worker_within_seconds(worker):
    event = _record("worker")
    began = time.monotonic()
    wait_for(lambda: AuditEvent.objects.filter(pk=event.pk, seq__isnull=False).exists(), timeout=20,
             message="the worker's chain_audit task to link the event")
    elapsed = time.monotonic() - began
    assert audit.walk_chain().ok
    # Generous for a loaded test machine; the design target is about a second.
    assert elapsed < 10, elapsed


# --- what verification and exports say about the window --------------------------------------


def test_verify_audit_reports_events_left_unchained_as_a_problem_not_a_broken_chain(db, monkeypatch):
    _record(1)
    audit.chain_now()
    _record(2)
    out = io.StringIO()
    call_command("verify_audit", stdout=out, stderr=io.StringIO())  # fresh: not a problem
    assert out.getvalue().startswith("audit chain ok: 1 events") and "1 event waiting to be chained" in out.getvalue()
    monkeypatch.setattr(audit, "CHAIN_LAG_WARNING_SECONDS", 0)
    with pytest.raises(CommandError) as failure:
        call_command("verify_audit", stdout=io.StringIO(), stderr=io.StringIO())
    message = str(failure.value)
    assert "1 event waiting to be chained since" in message and "broken" not in message
    audit.chain_now()
    out = io.StringIO()
    call_command("verify_audit", stdout=out, stderr=io.StringIO())
    assert out.getvalue().startswith("audit chain ok: 2 events")


def test_an_export_holds_linked_events_only_and_its_manifest_counts_the_rest(db, tmp_path):
    first, second = _record(1), _record(2)
    audit.chain_now()
    waiting = _record(3)
    path = tmp_path / "audit.jsonl"
    manifest = write_export(str(path), Export("jsonl"), exported_by="test")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in rows] == [first.pk, second.pk] and [r["seq"] for r in rows] == [1, 2]
    assert manifest["row_count"] == 2 and manifest["order"] == "seq" and manifest["only_chained_events"]
    assert manifest["unchained_waiting"]["count"] == 1 and manifest["unchained_waiting"]["oldest_at"]
    assert manifest["chain_head"]["seq"] == 2 and manifest["upto_seq"] == 2
    result = subprocess.run([sys.executable, str(VERIFY), str(path), f"{path}.manifest.json"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert waiting.pk not in [r["id"] for r in rows]


def test_a_gap_in_the_chain_positions_is_named(db):
    events = [_record(i) for i in range(4)]
    audit.chain_now()
    with connection.cursor() as cursor:  # as an attacker with superuser rights, trigger off
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE workflows_auditevent DISABLE TRIGGER workflows_auditevent_no_update_delete")
        cursor.execute("UPDATE workflows_auditevent SET seq = seq + 5 WHERE id = %s", [events[-1].pk])
        cursor.execute("ALTER TABLE workflows_auditevent ENABLE TRIGGER workflows_auditevent_no_update_delete")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
    walk = audit.walk_chain()  # every link still holds: only the positions tell
    assert not walk.ok and walk.broken_at == events[-1].pk
    assert walk.reason == "seq 9 does not follow the previous event's seq 3 (an event was removed or inserted)"
