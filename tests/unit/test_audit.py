"""The tamper-evident audit trail (DESIGN.md section 5): chain, verify, append-only."""
from __future__ import annotations

import datetime
import io
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from workflows import audit
from workflows.models import AuditEvent, DomainError
from workflows.request_context import client_ip_var, request_id_var

ROOT = Path(__file__).resolve().parents[2]
TRIGGER = "workflows_auditevent_no_update_delete"


def _events(n: int, actor=None) -> list[AuditEvent]:
    """n events, linked by the chainer (since migration 0012 events are linked after their
    commit, not as they are written), as stored."""
    written = [
        audit.record_standalone(action="submission.created", object_type="thing", object_id=i, actor=actor,
                                payload={"step": i, "text": f"event {i}"})
        for i in range(n)
    ]
    audit.chain_now()
    stored = AuditEvent.objects.in_bulk([e.pk for e in written])
    return [stored[e.pk] for e in written]


def _tamper(sql: str, params: list) -> None:
    """Rewrite history the way an attacker with table access would: trigger off, write, trigger on."""
    with connection.cursor() as cursor:
        # Django's foreign keys are deferred; PostgreSQL will not ALTER a table with pending
        # constraint checks, so run them now (they pass) before switching the trigger off.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"ALTER TABLE workflows_auditevent DISABLE TRIGGER {TRIGGER}")
        cursor.execute(sql, params)
        cursor.execute(f"ALTER TABLE workflows_auditevent ENABLE TRIGGER {TRIGGER}")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")


# --- recording ---------------------------------------------------------------------------


def test_record_outside_a_transaction_raises(transactional_db):
    assert not connection.in_atomic_block
    with pytest.raises(RuntimeError, match="inside the transaction"):
        audit.record(action="auth.denied", object_type="thing", object_id=1)
    assert not AuditEvent.objects.exists()


def test_record_refuses_an_action_outside_the_vocabulary(db):
    with pytest.raises(ValueError, match="not a valid AuditAction"):
        audit.record_standalone(action="review.aproved", object_type="thing", object_id=1)
    assert not AuditEvent.objects.exists()


def test_record_standalone_opens_its_own_transaction(transactional_db):
    event = audit.record_standalone(action="auth.denied", object_type="thing", object_id=1)
    assert AuditEvent.objects.get().pk == event.pk


def test_events_roll_back_with_the_change_they_record(db):
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            audit.record(action="submission.created", object_type="thing", object_id=1)
            1 / 0
    assert not AuditEvent.objects.exists()


def test_first_event_links_to_genesis_and_each_next_to_its_predecessor(db):
    events = _events(4)
    assert events[0].prev_hash == audit.GENESIS_HASH
    for previous, event in zip(events, events[1:]):
        assert event.prev_hash == previous.hash
    assert len({e.hash for e in events}) == 4


def test_record_captures_actor_object_and_request_context(db, make_user):
    user = make_user("alice", "reviewer")
    rid, ip = request_id_var.set("req-123"), client_ip_var.set("203.0.113.7")
    try:
        event = audit.record_standalone(action="review.claimed", obj=user, actor=user, payload={"k": "v"})
    finally:
        request_id_var.reset(rid)
        client_ip_var.reset(ip)
    event.refresh_from_db()
    assert (event.actor, event.actor_label) == (user, "alice")
    assert (event.object_type, event.object_id) == ("user", str(user.pk))
    assert (event.request_id, event.ip) == ("req-123", "203.0.113.7")
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok


def test_anonymous_and_missing_actor_are_system(db):
    from django.contrib.auth.models import AnonymousUser

    assert audit.record_standalone(action="auth.denied", actor=AnonymousUser()).actor_label == "system"
    assert audit.record_standalone(action="auth.denied").actor_label == "system"


def test_stored_rows_hash_the_same_as_when_written(db):
    # Values go through JSON and PostgreSQL's jsonb and timestamptz; the stored row must still
    # hash to the value computed before it was written.
    payload = {
        "text": 'Zoë wrote "<b>&</b>" \u2014 ok',
        "score": 0.912345,
        "small": 1e-7,
        "large": 1e20,
        "huge": 1.5e300,
        "whole": 5.0,
        "negative_zero": -0.0,
        "big_int": 2**70,
        "tokens": 123,
        "amount": Decimal("42.50"),
        "when": datetime.date(2025, 1, 31),
        "nested": {"z": [1, 2.5, None, True], "a": {}},
    }
    written = audit.record_standalone(action="draft.generated", object_type="draft", object_id=9, payload=payload)
    assert written.hash is None  # linked after the commit, by the chainer, from the stored row
    audit.chain_now()
    stored = AuditEvent.objects.get(pk=written.pk)
    assert stored.payload["amount"] == "42.50" and stored.payload["when"] == "2025-01-31"
    # The chainer hashed the stored row; the event as it was before writing hashes the same.
    assert audit.compute_hash(stored.prev_hash, written) == audit.compute_hash(stored.prev_hash, stored) == stored.hash
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok


def test_content_hash_is_sha256_of_the_text():
    import hashlib

    assert audit.content_hash("abc") == hashlib.sha256(b"abc").hexdigest()
    assert audit.content_hash(None) == audit.content_hash("")


# --- verification ------------------------------------------------------------------------


def test_an_empty_chain_verifies(db):
    audit.chain_now()  # events are linked after their commit (migration 0012)
    report = audit.verify_chain()
    assert report.ok and report.checked == 0 and report.head == audit.GENESIS_HASH


def test_a_chain_of_events_verifies(db):
    events = _events(6)
    audit.chain_now()  # events are linked after their commit (migration 0012)
    report = audit.verify_chain()
    assert report.ok
    assert report.checked == 6
    assert report.head == events[-1].hash
    assert report.broken_at is None


@pytest.mark.parametrize(
    "column, value",
    [
        ("payload", '{"step": 2, "text": "event 2 (edited)"}'),
        ("action", "test.other"),
        ("actor_label", "mallory"),
        ("object_id", "999"),
        ("object_type", "other"),
        ("request_id", "forged"),
        ("ip", "10.9.9.9"),
    ],
)
def test_tampering_with_a_row_is_detected_at_that_event(db, column, value):
    events = _events(5)
    target = events[2]
    audit.chain_now()  # events are linked after their commit (migration 0012)
    _tamper(f"UPDATE workflows_auditevent SET {column} = %s WHERE id = %s", [value, target.pk])
    assert getattr(AuditEvent.objects.get(pk=target.pk), column) != getattr(target, column), "the row was changed"
    audit.chain_now()  # events are linked after their commit (migration 0012)
    report = audit.verify_chain()
    assert not report.ok
    assert report.broken_at == target.pk
    assert report.checked == 2
    assert report.reason == "hash does not match the event's contents"


@pytest.mark.parametrize("column", ["actor_id", "workflow_version_id"])
def test_repointing_a_foreign_key_is_detected(db, demo, column):
    submitter, reviewer = demo.users["submitter"], demo.users["reviewer"]
    with transaction.atomic():
        event = audit.record(action="auth.denied", object_type="t", object_id=1, actor=submitter,
                             workflow_version=demo.version("customer-reply"))
    other = {"actor_id": reviewer.pk, "workflow_version_id": demo.version("underwriting-memo").pk}[column]
    audit.chain_now()  # events are linked after their commit (migration 0012)
    _tamper(f"UPDATE workflows_auditevent SET {column} = %s WHERE id = %s", [other, event.pk])
    audit.chain_now()  # events are linked after their commit (migration 0012)
    report = audit.verify_chain()
    assert not report.ok and report.broken_at == event.pk


def test_concurrent_writers_cannot_fork_the_chain(transactional_db):
    """Appends from several connections at once, each writer also running the chainer after
    each append (four chainers racing), still form one chain: one chainer links at a time."""
    import threading

    from django.db import connections

    def write(n):
        try:
            for i in range(n):
                audit.record_standalone(action="auth.denied", object_type="t", object_id=i)
                audit.chain_all()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(25,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    audit.chain_now()  # what a chainer that found the lock taken left to the one holding it
    prev_hashes = list(AuditEvent.objects.values_list("prev_hash", flat=True))
    assert len(prev_hashes) == 100 and None not in prev_hashes
    assert len(set(prev_hashes)) == 100, "two events link to the same predecessor: the chain forked"
    report = audit.verify_chain()
    assert report.ok and report.checked == 100


def test_tampering_with_the_time_is_detected(db):
    events = _events(3)
    audit.chain_now()  # events are linked after their commit (migration 0012)
    _tamper("UPDATE workflows_auditevent SET created_at = created_at - interval '1 day' WHERE id = %s",
            [events[1].pk])
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().broken_at == events[1].pk


def test_rehashing_a_tampered_row_breaks_the_next_link(db):
    # An attacker who recomputes the edited row's hash still breaks the link after it.
    events = _events(4)
    target = AuditEvent.objects.get(pk=events[1].pk)
    target.payload = {"step": 1, "text": "rewritten"}
    new_hash = audit.compute_hash(target.prev_hash, target)
    audit.chain_now()  # events are linked after their commit (migration 0012)
    _tamper("UPDATE workflows_auditevent SET payload = %s, hash = %s WHERE id = %s",
            ['{"step": 1, "text": "rewritten"}', new_hash, target.pk])
    audit.chain_now()  # events are linked after their commit (migration 0012)
    report = audit.verify_chain()
    assert report.broken_at == events[2].pk
    assert report.reason == "prev_hash does not match the previous event's hash"


def test_a_deleted_middle_row_is_detected(db):
    events = _events(5)
    audit.chain_now()  # events are linked after their commit (migration 0012)
    _tamper("DELETE FROM workflows_auditevent WHERE id = %s", [events[2].pk])
    audit.chain_now()  # events are linked after their commit (migration 0012)
    report = audit.verify_chain()
    assert not report.ok
    assert report.broken_at == events[3].pk
    assert report.reason == "prev_hash does not match the previous event's hash"
    assert report.checked == 2


def test_a_deleted_first_row_is_detected(db):
    events = _events(3)
    audit.chain_now()  # events are linked after their commit (migration 0012)
    _tamper("DELETE FROM workflows_auditevent WHERE id = %s", [events[0].pk])
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().broken_at == events[1].pk


def test_verify_audit_command_reports_ok(db):
    events = _events(3)
    out = io.StringIO()
    call_command("verify_audit", stdout=out)
    assert out.getvalue().strip() == f"audit chain ok: 3 events, head {events[-1].hash}"


def test_verify_audit_command_names_the_broken_event(db):
    events = _events(4)
    audit.chain_now()  # events are linked after their commit (migration 0012)
    _tamper("UPDATE workflows_auditevent SET action = 'review.approved' WHERE id = %s", [events[1].pk])
    with pytest.raises(CommandError) as info:
        call_command("verify_audit", stdout=io.StringIO())
    assert f"audit chain broken at event {events[1].pk}:" in str(info.value)
    assert "(1 events before it verified)" in str(info.value)


def test_manage_py_verify_audit_exits_non_zero(transactional_db):
    # The real command line, in a separate process reading the committed test database.
    events = _events(3)
    audit.chain_now()  # events are linked after their commit (migration 0012)
    _tamper("UPDATE workflows_auditevent SET payload = '{}' WHERE id = %s", [events[2].pk])
    base_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    env = {**os.environ, "DATABASE_URL": f"{base_url}/{connection.settings_dict['NAME']}", "DJANGO_DEBUG": "true"}
    proc = subprocess.run([sys.executable, "manage.py", "verify_audit"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert f"audit chain broken at event {events[2].pk}" in proc.stderr


# --- append-only -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    ["UPDATE workflows_auditevent SET action = 'x' WHERE id = %s", "DELETE FROM workflows_auditevent WHERE id = %s"],
)
def test_trigger_rejects_raw_update_and_delete(db, sql):
    (event,) = _events(1)
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [event.pk])
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.action == "submission.created"


def test_trigger_rejects_queryset_update(db):
    events = _events(2)
    with pytest.raises(DatabaseError, match="append-only: UPDATE refused"):
        with transaction.atomic():
            AuditEvent.objects.filter(pk=events[0].pk).update(payload={"forged": True})
    assert AuditEvent.objects.get(pk=events[0].pk).payload == {"step": 0, "text": "event 0"}
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok


def test_trigger_rejects_queryset_delete(db):
    _events(3)
    with pytest.raises(DatabaseError, match="append-only: DELETE refused"):
        with transaction.atomic():
            AuditEvent.objects.all().delete()
    assert AuditEvent.objects.count() == 3
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok


def test_trigger_is_installed_and_enabled(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgenabled FROM pg_trigger WHERE tgname = %s AND tgrelid = 'workflows_auditevent'::regclass",
            [TRIGGER],
        )
        assert cursor.fetchall() == [("O",)]


def test_model_save_on_an_existing_event_raises(db):
    (event,) = _events(1)
    event.action = "review.approved"
    with pytest.raises(DomainError, match="append-only"):
        event.save()
    assert AuditEvent.objects.get(pk=event.pk).action == "submission.created"


def test_model_delete_raises(db):
    (event,) = _events(1)
    with pytest.raises(DomainError, match="append-only"):
        event.delete()
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_payload_numbers_are_stored_as_the_database_returns_them(db):
    event = audit.record_standalone(action="auth.denied", payload={"a": 1e16, "b": 5.0, "c": 0.25, "d": -0.0})
    assert event.payload == {"a": 10**16, "b": 5, "c": 0.25, "d": 0}
    assert all(type(v) is t for v, t in zip(event.payload.values(), (int, int, float, int)))


@pytest.mark.parametrize(
    "remote_addr, stored",
    [
        ("::ffff:7f00:1", "127.0.0.1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:db8:0:0:0:0:0:1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("127.000.000.001", None),
        ("not an address", None),
    ],
)
def test_client_addresses_are_stored_as_hashed_so_the_chain_verifies(db, remote_addr, stored):
    token = client_ip_var.set(remote_addr)
    try:
        with transaction.atomic():
            audit.record(action="auth.denied", object_type="t", object_id=1)
    finally:
        client_ip_var.reset(token)
    event = AuditEvent.objects.get(action="auth.denied")
    assert event.ip == stored
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok


# --- audit.batch(): a service's events appended together at its end ---------------------------


def test_a_batch_appends_its_events_in_order_at_its_end_and_the_chain_holds(db):
    from django.db import transaction

    with transaction.atomic(), audit.batch():
        first = audit.record(action="submission.created", object_type="thing", object_id=1)
        second = audit.record(action="draft.generated", object_type="thing", object_id=1)
        assert not AuditEvent.objects.exists()  # nothing written until the batch ends
    audit.chain_now()
    stored = list(AuditEvent.objects.order_by("id"))
    assert [e.action for e in stored] == ["submission.created", "draft.generated"]
    assert [first.pk, second.pk] == [e.pk for e in stored]
    assert stored[1].prev_hash == stored[0].hash and [e.seq for e in stored] == [1, 2]
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok


def test_a_batch_that_raises_writes_nothing(db):
    from django.db import transaction

    with pytest.raises(ZeroDivisionError):
        with transaction.atomic(), audit.batch():
            audit.record(action="submission.created", object_type="thing", object_id=1)
            1 / 0
    assert not AuditEvent.objects.exists()


def test_a_nested_batch_is_appended_by_the_outer_one(db):
    from django.db import transaction

    with transaction.atomic(), audit.batch():
        audit.record(action="submission.created", object_type="thing", object_id=1)
        with audit.batch():
            audit.record(action="draft.generated", object_type="thing", object_id=1)
        assert not AuditEvent.objects.exists()
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert AuditEvent.objects.count() == 2 and audit.verify_chain().ok


def test_history_managers_reuse_one_class_and_stay_bound_to_their_instance():
    # workflows/history_managers.py: the class simple-history made per read is made once; each
    # read still returns a manager of its own, bound to the instance it was read from.
    from workflows.models import Submission

    a, b = Submission(pk=1), Submission(pk=2)
    first, second = a.history, b.history
    assert type(first) is type(second) is type(Submission.history)
    assert first is not second
    assert first.instance is a and second.instance is b
    assert '"workflows_historicalsubmission"."id" = 1 ' in str(first.all().query)
    assert '"workflows_historicalsubmission"."id" = 2 ' in str(second.all().query)
