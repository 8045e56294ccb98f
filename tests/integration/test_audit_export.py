"""Audit export (CSV / JSON Lines + manifest) and the offline verifier, on real PostgreSQL."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import caches
from django.core.management import call_command
from django.db import connection
from django.test import Client

from tests.bench.bench_export import insert_chain
from tests.conftest import CUSTOMER_REPLY_INPUT
from tests.integration.conftest import drafted, submit
from workflows import audit
from workflows.audit_export import Export, ExportFilters, write_export
from workflows.models import AuditEvent
from workflows.request_context import client_ip_var, request_id_var

ROOT = Path(__file__).resolve().parents[2]
VERIFY = ROOT / "tools" / "verify_export.py"


def verify(path, manifest=None):
    manifest = manifest or f"{path}.manifest.json"
    result = subprocess.run([sys.executable, str(VERIFY), str(path), str(manifest)], capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


def record(action="workflow.published", payload=None, **kwargs):
    """One event, linked into the chain with every event before it (events are linked after
    their commit since migration 0012; exports hold only linked events), as stored."""
    event = audit.record_standalone(action=action, object_type="test", object_id="1", payload=payload or {}, **kwargs)
    audit.chain_now()
    return AuditEvent.objects.get(pk=event.pk)


@pytest.fixture
def varied(demo):
    """Events with unicode, formulas, IPv6, floats, a user and the system as actor."""
    token_ip, token_req = client_ip_var.set("2001:db8::1"), request_id_var.set("=req")
    try:
        record(payload={"note": "Grüße, 東京 ✓", "formula": "=HYPERLINK(\"x\")", "n": 5.0, "f": 0.1})
        record(payload={"note": "-1+2", "tab": "\tx", "cr": "\rx", "quote": "'=x"}, actor=demo.users["compliance"])
    finally:
        client_ip_var.reset(token_ip)
        request_id_var.reset(token_req)
    record(action="review.approved", payload={"big": 10**20, "neg": -3, "none": None, "list": [1, "@a"]})
    return demo


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_export_verifies_and_one_changed_byte_is_named(varied, tmp_path, fmt):
    path = tmp_path / f"audit.{fmt}"
    manifest = write_export(str(path), Export(fmt), exported_by="test")
    assert manifest["row_count"] == AuditEvent.objects.count()
    assert manifest["chain_head"]["hash"] == AuditEvent.objects.order_by("-id").first().hash
    assert manifest["encoding_version"] == audit.ENCODING_VERSION == 1
    code, out = verify(path)
    assert code == 0, out
    assert out.startswith("OK ") and "unfiltered" in out

    # Change one byte inside the payload of the second-to-last row.
    data = path.read_bytes()
    target = AuditEvent.objects.order_by("-id")[1]
    lines = data.split(b"\n")
    index = next(i for i, line in enumerate(lines) if (line.startswith(f"{target.id},".encode()) if fmt == "csv"
                                                        else line.startswith(f'{{"action":"{target.action}"'.encode())
                                                        and f'"id":{target.id},'.encode() in line))
    where = lines[index].index(b"note") if b"note" in lines[index] else lines[index].index(b"action")
    changed = bytearray(lines[index])
    changed[where] = ord("N")
    lines[index] = bytes(changed)
    path.write_bytes(b"\n".join(lines))
    code, out = verify(path)
    assert code == 1, out
    assert "file SHA-256" in out
    assert f"line {index + 1} (id {target.id})" in out, out


def test_formula_cells_are_neutralised_and_still_verify(varied, tmp_path):
    path = tmp_path / "audit.csv"
    write_export(str(path), Export("csv"), exported_by="test")
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
    assert all(not r[c].startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for c in r)
    with_ip = [r for r in rows if r["ip"]]
    assert with_ip and all(r["ip"] == "2001:db8::1" and r["request_id"] == "'=req" for r in with_ip)
    assert verify(path)[0] == 0


def test_a_row_altered_in_the_database_is_named(varied, tmp_path):
    victim = AuditEvent.objects.filter(action="review.approved").order_by("-id").first()
    with connection.cursor() as cursor:
        # The test's own inserts left deferred foreign-key checks pending; run them first.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE workflows_auditevent DISABLE TRIGGER workflows_auditevent_no_update_delete")
        cursor.execute("UPDATE workflows_auditevent SET payload = '{\"big\": 1}'::jsonb WHERE id = %s", [victim.id])
        cursor.execute("ALTER TABLE workflows_auditevent ENABLE TRIGGER workflows_auditevent_no_update_delete")
    for fmt in ("csv", "jsonl"):
        path = tmp_path / f"audit.{fmt}"
        write_export(str(path), Export(fmt), exported_by="test")
        code, out = verify(path)
        assert code == 1 and f"(id {victim.id}): hash does not match" in out, out
    # A filtered export containing it names it as well (each row's hash is checked on its own).
    path = tmp_path / "filtered.jsonl"
    write_export(str(path), Export("jsonl", ExportFilters(action="review.approved")), exported_by="test")
    code, out = verify(path)
    assert code == 1 and f"(id {victim.id})" in out, out


def test_filters_select_rows_and_filtered_exports_verify_without_links(varied, tmp_path):
    compliance = varied.users["compliance"]
    path = tmp_path / "actor.jsonl"
    manifest = write_export(str(path), Export("jsonl", ExportFilters(actor="compliance")), exported_by="test")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows and {r["actor"] for r in rows} == {"compliance"} and {r["actor_id"] for r in rows} == {compliance.pk}
    assert manifest["filtered"] is True and manifest["row_count"] == len(rows)
    code, out = verify(path)
    assert code == 0 and "filtered" in out, out

    write_export(str(path), Export("jsonl", ExportFilters(action="review.approved")), exported_by="test")
    assert {json.loads(line)["action"] for line in path.read_text().splitlines()} == {"review.approved"}
    last = AuditEvent.objects.order_by("-id").first()
    write_export(str(path), Export("jsonl", ExportFilters(since=last.created_at)), exported_by="test")
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [last.id]
    write_export(str(path), Export("jsonl", ExportFilters(until=last.created_at)), exported_by="test")
    assert last.id not in [json.loads(line)["id"] for line in path.read_text().splitlines()]
    write_export(str(path), Export("jsonl", ExportFilters(workflow="no-such-workflow")), exported_by="test")
    assert path.read_text() == ""
    assert verify(path)[0] == 0


def test_submission_filter(varied, tmp_path):
    submission = drafted(submit(varied, dict(CUSTOMER_REPLY_INPUT))).submission
    audit.chain_now()  # events are linked after their commit (migration 0012)
    path = tmp_path / "sub.csv"
    manifest = write_export(str(path), Export("csv", ExportFilters(submission=submission.pk)), exported_by="test")
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
    assert manifest["row_count"] == len(rows) >= 2
    assert {"submission.created", "draft.generated"} <= {r["action"] for r in rows}
    assert verify(path)[0] == 0


def test_a_removed_row_breaks_the_links_of_an_unfiltered_export(varied, tmp_path):
    path = tmp_path / "audit.jsonl"
    write_export(str(path), Export("jsonl"), exported_by="test")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    del lines[1]
    path.write_text("".join(lines), encoding="utf-8")
    code, out = verify(path)
    assert code == 1 and "line 2 " in out and "prev_hash" in out, out


def test_the_command_writes_file_and_manifest_and_records_the_export(varied, tmp_path):
    path = tmp_path / "cmd.csv"
    call_command("export_audit", "--format", "csv", "--output", str(path), "--actor", "compliance",
                 stdout=io.StringIO())
    manifest = json.loads((tmp_path / "cmd.csv.manifest.json").read_text())
    assert manifest["filters"]["actor"] == "compliance" and manifest["exported_by"] == "manage.py export_audit"
    assert verify(path)[0] == 0
    event = AuditEvent.objects.get(action="audit.exported")
    assert event.payload["file_sha256"] == manifest["file_sha256"]
    assert event.payload["row_count"] == manifest["row_count"] and event.payload["format"] == "csv"
    # No personal data: the actor filter is a user reference, not the name.
    assert "compliance" not in json.dumps(event.payload)
    assert event.payload["filters"]["actor"] == {"user_id": varied.users["compliance"].pk}
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok


def test_web_export_and_manifest_verify_and_are_recorded(varied, tmp_path):
    client = Client()
    client.force_login(varied.users["compliance"])
    page = client.get("/audit/", {"action": "review.approved"})
    assert page.status_code == 200
    offer = page.context["export"]
    assert offer["count"] == 1 and offer["filtered"]
    body = page.content.decode()
    assert 'id="export-csv"' in body and "upto=" in body
    query = f"format=csv&{offer['query']}"
    response = client.get(f"/audit/export/?{query}")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    path = tmp_path / "web.csv"
    path.write_bytes(b"".join(response.streaming_content))
    # Events written since (this export's own event) do not change the manifest: same bound.
    record()
    manifest = client.get(f"/audit/export/manifest/?{query}")
    assert manifest.status_code == 200
    (tmp_path / "web.csv.manifest.json").write_bytes(manifest.content)
    code, out = verify(path)
    assert code == 0, out
    event = AuditEvent.objects.filter(action="audit.exported").get()
    assert event.actor == varied.users["compliance"]
    assert event.payload["file_sha256"] == json.loads(manifest.content)["file_sha256"]
    assert event.payload["complete"] is True and event.payload["filters"]["action"] == "review.approved"


@pytest.mark.parametrize("who", ["submitter", "reviewer", "wfadmin"])
def test_anyone_but_compliance_gets_404_and_an_auth_denied_event(demo, who):
    client = Client()
    user = demo.users[who]
    client.force_login(user)
    # Earlier tests in this run may have used up this user's per-minute budget of events.
    caches[settings.REVIEWDESK_DRAFT_CACHE].delete(f"denied:user:{user.pk}")
    before = AuditEvent.objects.filter(action="auth.denied").count()
    for url in ("/audit/export/?format=csv", "/audit/export/manifest/?format=csv"):
        assert client.get(url).status_code == 404
    denied = AuditEvent.objects.filter(action="auth.denied").order_by("id")
    assert denied.count() == before + 2
    assert not AuditEvent.objects.filter(action="audit.exported").exists()


def test_an_export_of_100000_events_streams_with_flat_memory(demo, tmp_path):
    with connection.cursor() as cursor:
        insert_chain(cursor.cursor, 100_000)
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok
    client = Client()
    client.force_login(demo.users["compliance"])
    path = tmp_path / "big.jsonl"
    tracemalloc.start()
    try:
        response = client.get("/audit/export/?format=jsonl")
        with path.open("wb") as out:
            for chunk in response.streaming_content:
                out.write(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path.stat().st_size > 20_000_000
    assert peak < 50 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    # The file stopped at the head when it was requested, before the export's own event: its
    # manifest (second pass) is bounded the same way, as the web page's links are.
    upto = AuditEvent.objects.get(action="audit.exported").id - 1
    manifest = Export("jsonl", upto=upto).run().manifest(exported_by="test")
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    assert manifest["row_count"] >= 100_000
    code, out = verify(path, tmp_path / "m.json")
    assert code == 0, out


def test_an_export_bound_beyond_the_head_is_refused(demo):
    client = Client()
    client.force_login(demo.users["compliance"])
    beyond = (AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0) + 10
    for url in ("/audit/export/", "/audit/export/manifest/"):
        assert client.get(url, {"format": "jsonl", "upto": beyond}).status_code == 400
    assert not AuditEvent.objects.filter(action="audit.exported").exists()


# --- the fast path writes exactly what the reference encoder writes --------------------------

_ODD_TEXTS = ["", "plain", "x" * 64, "ok ✓ Grüße 東京 😀", "a,b", 'say "hi"', "back\\slash", "tab\there", "\tlead",
              "\rlead", "line\nbreak", "cr\rin", "=SUM(A1)", "+1", "-1", "@me", "'quoted", "|=x", "pipe|", "a|+b",
              "\u00a0nbsp", "\u2028sep", "\ufeffbom", "\x7fdel", "".join(chr(c) for c in range(1, 32)), "=", " "]
_ODD_PAYLOADS = ['{}', '{"n": 0.1, "tiny": 1e-05, "f": 1.0, "big": 100000000000000000000, "neg": -2.5e-07}',
                 '{"Z": 1, "a": {"é": [1, "x", null, true], "É": {}}, "😀": "\\u0001 \\" \\\\ \\n", "\\u007f": 2}',
                 '"a string"', '[1, 2]', '-3', '{"formula": "=1+1", "k,ey": "v\\"q"}',
                 '{"nested": {"b": {"c": [{"z": 1, "y": 2}]}}, "long": "' + "ü" * 300 + '"}']


def _insert_raw(rows):
    """Rows straight into the table, already linked (the test database's owner may insert linked
    rows, migration 0012; hashes need not chain: the exporter copies what is stored, and these
    tests compare encoders, not the chain)."""
    audit.chain_now()
    head_seq = audit.chain_head()[0]
    with connection.cursor() as cursor:
        for i, (text, payload) in enumerate(rows):
            cursor.execute(
                "INSERT INTO workflows_auditevent (created_at, actor_label, action, object_type, object_id, payload, "
                "request_id, ip, seq, prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s)",
                ["2026-02-03T04:05:06.000100+00:00" if i % 2 else "2026-02-03T04:05:06+00:00", text, text, text,
                 text[:64], payload, text[:64], ["10.0.0.1", "::1", None][i % 3], head_seq + 1 + i, text[:64],
                 f"h{i}-" + text[:50]])


def _both(export_args, monkeypatch=None):
    fast = Export(*export_args)
    reference = Export(*export_args, fast=False)
    fast_bytes, reference_bytes = b"".join(fast.chunks()), b"".join(reference.chunks())
    return fast, reference, fast_bytes, reference_bytes


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_the_fast_path_writes_the_reference_bytes_for_every_odd_value(varied, fmt, monkeypatch):
    rows = [(text, _ODD_PAYLOADS[i % len(_ODD_PAYLOADS)]) for i, text in enumerate(_ODD_TEXTS)]
    rows += [("plain", payload) for payload in _ODD_PAYLOADS]
    _insert_raw(rows)
    # Small batches, so some are all plain, some mixed, and odd rows sit at batch edges.
    monkeypatch.setattr("workflows.audit_export.BATCH", 4)
    for filters in (ExportFilters(), ExportFilters(action="plain"), ExportFilters(action="review.approved")):
        fast, reference, fast_bytes, reference_bytes = _both((fmt, filters))
        assert fast_bytes == reference_bytes
        assert fast.row_count == reference.row_count > 0
        assert fast.sha256 == reference.sha256
        assert (fast.first_id, fast.first_hash, fast.first_prev_hash, fast.last_id, fast.last_hash) == (
            reference.first_id, reference.first_hash, reference.first_prev_hash, reference.last_id,
            reference.last_hash)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_plain_rows_never_take_the_slow_path(varied, fmt, monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("a plain batch went through the reference encoder")

    with connection.cursor() as cursor:
        insert_chain(cursor.cursor, 50)
    # varied's rows are odd on purpose (a "=req" request id, formulas); these 50 are plain.
    monkeypatch.setattr(Export, "_reencode_odd_rows", refuse)
    fast, reference, fast_bytes, reference_bytes = _both((fmt, ExportFilters(actor="system", action="draft.routed")))
    assert fast.row_count == 10 and fast_bytes == reference_bytes
    path = tmp_path / f"fast.{fmt}"
    manifest = write_export(str(path), Export(fmt, ExportFilters(actor="system", action="draft.routed")),
                            exported_by="test")
    assert manifest["row_count"] == 10 and verify(path)[0] == 0
