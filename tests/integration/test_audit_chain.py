"""The chain at scale (workflows/audit_chain.py): checkpoints, anchors, tampering named, writers."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, connections, transaction
from django.test import Client

from workflows import audit, audit_chain, tasks
from workflows.models import AuditEvent
from workflows.vocab import AuditAction

TRIGGER = "workflows_auditevent_no_update_delete"
KEY = "test-anchor-key-not-in-the-database"


@pytest.fixture
def anchors(settings, tmp_path) -> Path:
    settings.REVIEWDESK_AUDIT_ANCHOR_DIR = tmp_path / "anchors"
    settings.REVIEWDESK_AUDIT_ANCHOR_KEY = KEY
    return settings.REVIEWDESK_AUDIT_ANCHOR_DIR


def _events(n: int, start: int = 0) -> list[AuditEvent]:
    """n events, linked by the chainer (events are linked after their commit since migration
    0012), as stored."""
    written = [
        audit.record_standalone(action="submission.created", object_type="thing", object_id=i,
                                payload={"step": i, "text": f"événement {i}", "ratio": i / 7, "ok": i % 2 == 0})
        for i in range(start, start + n)
    ]
    audit.chain_now()
    stored = AuditEvent.objects.in_bulk([e.pk for e in written])
    return [stored[e.pk] for e in written]


def _tampering():
    """As an attacker with superuser rights: trigger off for the block, on again after."""
    class _Block:
        def __enter__(self):
            self.cursor = connection.cursor().__enter__()
            self.cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            self.cursor.execute(f"ALTER TABLE workflows_auditevent DISABLE TRIGGER {TRIGGER}")
            return self.cursor

        def __exit__(self, *exc):
            self.cursor.execute(f"ALTER TABLE workflows_auditevent ENABLE TRIGGER {TRIGGER}")
            self.cursor.execute("SET CONSTRAINTS ALL DEFERRED")
            self.cursor.__exit__(*exc)
    return _Block()


def _verify_audit() -> str:
    try:
        call_command("verify_audit", stdout=(out := _Out()), stderr=out)
    except CommandError as exc:
        raise AssertionError(str(exc)) from None
    return out.text


class _Out:
    def __init__(self):
        self.text = ""

    def write(self, s, *args, **kwargs):
        self.text += s

    def flush(self):
        pass


def _verify_audit_fails() -> str:
    with pytest.raises(CommandError) as failure:
        call_command("verify_audit", stdout=_Out())
    return str(failure.value)


# --- append-only -------------------------------------------------------------------------


def test_update_and_delete_fail_on_postgresql(db):
    event = _events(1)[0]
    for sql in ("UPDATE workflows_auditevent SET action = 'x' WHERE id = %s",
                "DELETE FROM workflows_auditevent WHERE id = %s"):
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [event.pk])


# --- the fast walk -----------------------------------------------------------------------


def test_fast_walk_agrees_with_compute_hash_on_every_kind_of_field(demo):
    from workflows.request_context import client_ip_var, request_id_var
    tokens = [request_id_var.set("req-ü-1"), client_ip_var.set("::ffff:10.0.0.1")]
    try:
        audit.record_standalone(action="auth.denied", object_type="page", object_id="x", actor=demo.users["compliance"],
                                payload={"n": 1e16, "f": 0.1, "nested": {"b": [1, "ß", None], "a": True}})
    finally:
        client_ip_var.reset(tokens[1])
        request_id_var.reset(tokens[0])
    token = client_ip_var.set("2001:db8::1")
    try:
        _events(3)
    finally:
        client_ip_var.reset(token)
    audit.chain_now()  # events are linked after their commit (migration 0012)
    slow = audit.verify_chain(AuditEvent.objects.order_by("id"))
    walk = audit.walk_chain()
    assert slow.ok and walk.ok and walk.checked == slow.checked >= 4 and walk.head == slow.head


# --- checkpoints -------------------------------------------------------------------------


def test_the_periodic_task_records_a_checkpoint_and_the_next_run_starts_from_it(db):
    events = _events(5)
    tasks.verify_audit_checkpoint()
    first = audit_chain.last_checkpoint()
    assert first.ok and first.from_id == 0 and first.to_id == events[-1].pk
    assert first.checked == 5 and first.count == 5
    checkpoint_event = AuditEvent.objects.get(action=AuditAction.AUDIT_VERIFIED)
    assert checkpoint_event.payload["head"] == events[-1].hash

    more = _events(3, start=5)
    tasks.verify_audit_checkpoint()
    second = audit_chain.last_checkpoint()
    # Only the new events: the first checkpoint's own event and the three after it.
    assert second.ok and second.from_id == first.to_id and second.to_id == more[-1].pk
    assert second.checked == 4 and second.count == 5 + 4
    assert AuditEvent.objects.filter(action=AuditAction.AUDIT_VERIFIED).count() == 2


def test_a_broken_link_after_the_checkpoint_is_recorded_and_named(db):
    events = _events(4)
    audit_chain.verify_checkpoint()
    later = _events(2, start=4)
    audit.chain_now()  # events are linked after their commit (migration 0012)
    with _tampering() as cursor:
        cursor.execute("UPDATE workflows_auditevent SET payload = '{\"step\": 99}' WHERE id = %s", [later[0].pk])
    checkpoint = audit_chain.verify_checkpoint()
    assert not checkpoint.ok and checkpoint.broken_at == later[0].pk
    assert checkpoint.from_id == events[-1].pk
    # The next run starts again from the last good checkpoint, and still finds it.
    assert audit_chain.verify_checkpoint().broken_at == later[0].pk


def test_the_compliance_page_shows_the_last_verification_and_never_walks(demo):
    client = Client()
    client.force_login(demo.users["compliance"])
    _events(3)
    page = client.get("/audit/")
    assert "Not verified yet" in page.content.decode()
    checkpoint = audit_chain.verify_checkpoint()
    page = client.get("/audit/", {"verify": "1"})
    html = page.content.decode()
    assert page.status_code == 200 and 'name="verify"' not in html
    assert "Chain intact" in html and f"chain positions 1–{checkpoint.to_seq} checked" in html
    assert f"({checkpoint.count} in the chain up to event #{checkpoint.to_id})" in html
    assert checkpoint.to_seq == checkpoint.count == AuditEvent.objects.filter(seq__isnull=False).count()
    # The checkpoint's own audit.verified event waits for the chainer, and the page says so.
    assert "1 newest event not linked into the chain yet" in html
    assert checkpoint.head[:16] in html


# --- anchors -----------------------------------------------------------------------------


def test_anchor_audit_writes_a_signed_file_once_and_records_it(db, anchors):
    events = _events(3)
    call_command("anchor_audit", stdout=_Out())
    files = sorted(anchors.glob("anchor-*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    # The verified head: the three events and the checkpoint recorded just before anchoring.
    checkpoint = audit_chain.last_checkpoint()
    assert data["event_id"] == checkpoint.to_id == events[-1].pk and data["count"] == 3
    assert data["hash"] == events[-1].hash and len(data["hmac_sha256"]) == 64
    assert not (files[0].stat().st_mode & 0o222)  # read-only
    recorded = AuditEvent.objects.get(action=AuditAction.AUDIT_ANCHORED)
    assert recorded.payload["location"] == str(files[0]) and recorded.payload["event_id"] == events[-1].pk
    assert "anchor ok: event" in _verify_audit()
    # A second anchor is a new file; the first is never rewritten.
    before = files[0].read_bytes()
    call_command("anchor_audit", stdout=_Out())
    assert len(list(anchors.glob("anchor-*.json"))) == 2 and files[0].read_bytes() == before


def test_anchor_audit_refuses_without_a_key(db, anchors, settings):
    settings.REVIEWDESK_AUDIT_ANCHOR_KEY = ""
    _events(1)
    with pytest.raises(CommandError, match="REVIEWDESK_AUDIT_ANCHOR_KEY is not set"):
        call_command("anchor_audit", stdout=_Out())
    assert not anchors.exists() or not list(anchors.iterdir())
    assert "anchors not checked" in _verify_audit()


def test_anchor_audit_refuses_a_broken_chain(db, anchors):
    events = _events(3)
    audit.chain_now()  # events are linked after their commit (migration 0012)
    with _tampering() as cursor:
        cursor.execute("UPDATE workflows_auditevent SET object_id = 'x' WHERE id = %s", [events[1].pk])
    with pytest.raises(CommandError, match=f"refusing to anchor a broken chain: event {events[1].pk}"):
        call_command("anchor_audit", stdout=_Out())


def test_a_cut_tail_after_an_anchor_is_named(db, anchors):
    events = _events(5)
    audit_chain.anchor_head()
    audit.chain_now()  # events are linked after their commit (migration 0012)
    with _tampering() as cursor:
        # Every event from the anchored one on: the checkpoint and anchor records too.
        cursor.execute("DELETE FROM workflows_auditevent WHERE id >= %s", [events[-1].pk])
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok  # the chain alone cannot see it
    message = _verify_audit_fails()
    assert f"anchored event {events[-1].pk} is missing" in message
    # ...and the next anchor refuses to bless the cut chain.
    with pytest.raises(audit_chain.AnchorError, match="is missing"):
        audit_chain.anchor_head()


def test_a_rehashed_suffix_after_an_anchor_is_named(db, anchors):
    events = _events(6)
    anchor = audit_chain.anchor_head()
    assert anchor.event_id == events[-1].pk
    rows = list(AuditEvent.objects.filter(id__gte=events[2].pk).order_by("id"))
    rows[0].payload = {"step": 2, "text": "rewritten"}
    prev = rows[0].prev_hash
    audit.chain_now()  # events are linked after their commit (migration 0012)
    with _tampering() as cursor:
        for row in rows:  # the app's own function, every later hash recomputed
            row.prev_hash, row.hash = prev, audit.compute_hash(prev, row)
            prev = row.hash
            cursor.execute("UPDATE workflows_auditevent SET payload = %s, prev_hash = %s, hash = %s WHERE id = %s",
                           [json.dumps(row.payload), row.prev_hash, row.hash, row.pk])
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok  # the chain alone cannot see it
    message = _verify_audit_fails()
    assert f"anchor mismatch at event {events[-1].pk}" in message and anchor.hash in message


def test_a_row_altered_without_rehash_is_named(db, anchors):
    events = _events(4)
    audit_chain.anchor_head()
    audit.chain_now()  # events are linked after their commit (migration 0012)
    with _tampering() as cursor:
        cursor.execute("UPDATE workflows_auditevent SET actor_label = 'mallory' WHERE id = %s", [events[1].pk])
    message = _verify_audit_fails()
    assert f"audit chain broken at event {events[1].pk}: hash does not match" in message


def test_a_tampered_anchor_file_is_refused_and_named(db, anchors):
    events = _events(3)
    anchor = audit_chain.anchor_head()
    path = Path(anchor.location)
    data = json.loads(path.read_text())
    data["count"] = 2  # e.g. to cover a deleted event
    path.chmod(0o644)
    path.write_text(json.dumps(data))
    message = _verify_audit_fails()
    assert f"anchor {path} refused: HMAC does not match" in message
    scan = audit_chain.default_target().scan(KEY.encode())
    assert scan.valid == [] and scan.refused[0][0] == str(path)
    assert events  # the chain itself is fine
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok


# --- writers -----------------------------------------------------------------------------


def test_twenty_concurrent_writers_leave_one_unbroken_chain(fresh_pool_after, transactional_db):
    writers, per_writer, errors = 20, 15, []
    start = threading.Barrier(writers)

    def write(n: int) -> None:
        try:
            start.wait()
            for i in range(per_writer):
                audit.record_standalone(action="auth.denied", object_type="writer", object_id=n,
                                        payload={"writer": n, "i": i})
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
    assert AuditEvent.objects.count() == writers * per_writer
    audit.chain_now()  # events are linked after their commit (migration 0012)
    report = audit.verify_chain()
    assert report.ok and report.checked == writers * per_writer
    prevs = list(AuditEvent.objects.values_list("prev_hash", flat=True))
    assert len(set(prevs)) == len(prevs)  # no two events link to the same head


@pytest.fixture
def fresh_pool_after():
    """The writers fill the connection pool to its maximum; later tests (a live server and a
    worker sharing this process's pool) must not inherit it: start them from a new pool."""
    yield
    connections.close_all()
    if getattr(connection, "pool", None) is not None:
        connection.close_pool()
