"""tools/verify_export.py (standard library only) hashes exactly as workflows.audit.compute_hash."""
from __future__ import annotations

import csv
import datetime
import importlib.util
import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from workflows import audit
from workflows.audit_export import COLUMNS, csv_cells, jsonl_line, neutralise
from workflows.models import AuditEvent

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("verify_export", ROOT / "tools" / "verify_export.py")
verify_export = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(verify_export)

UTC = datetime.UTC


def _event(**overrides) -> AuditEvent:
    values = dict(
        created_at=datetime.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC), actor_id=None, actor_label="system",
        action="submission.created", object_type="submission", object_id="17", workflow_version_id=None,
        payload={}, request_id="", ip=None,
    )
    values.update(overrides)
    return AuditEvent(**values)


EVENTS = [
    _event(),
    _event(actor_id=4, actor_label="rëviewer", workflow_version_id=9, request_id="req-1", ip="10.0.0.1"),
    _event(ip="2001:db8::1", payload={"note": "Grüße 東京 ✓ \u2028", "emoji": "🙂"}),
    _event(payload={"n": 5, "f": 0.1, "tiny": 1e-07, "big": 10**20, "neg": -3, "none": None, "t": True}),
    _event(payload={"formula": "=SUM(A1)", "plus": "+1", "at": "@x", "tab": "\tx", "cr": "\rx", "q": "'x"}),
    _event(created_at=datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC), object_id="",
           request_id="=cmd|' /C calc'!A0", actor_label="-dash"),
    _event(payload={"nested": {"b": [1, {"z": 1, "a": 2}], "a": "x,y\n\"quoted\""}}),
]


def _through_files(tmp_path, events):
    """Write the events as the exporter would, read them back with the tool; (tool, app) hashes."""
    prev, hashes = audit.GENESIS_HASH, []
    csv_path, jsonl_path = tmp_path / "e.csv", tmp_path / "e.jsonl"
    with csv_path.open("w", encoding="utf-8", newline="") as c, jsonl_path.open("w", encoding="utf-8", newline="") as j:
        writer = csv.writer(c, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        for pk, event in enumerate(events, start=1):
            digest = audit.compute_hash(prev, event)
            fields = audit._hashed_fields(event)
            writer.writerow(csv_cells(pk, fields, prev, digest, pk))  # seq = pk here
            j.write(jsonl_line(pk, fields, prev, digest, pk))
            hashes.append((prev, digest))
            prev = digest
    for rows in (verify_export.csv_rows(str(csv_path)), verify_export.jsonl_rows(str(jsonl_path))):
        got = [(fields["prev_hash"], verify_export.row_hash(fields["prev_hash"], fields)) for _, fields in rows]
        assert got == hashes


def test_the_tool_and_compute_hash_agree(tmp_path):
    _through_files(tmp_path, EVENTS)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(payload=st.dictionaries(st.text(max_size=8), json_values, max_size=4), text=st.text(max_size=12),
       ip=st.sampled_from([None, "127.0.0.1", "::1", "fe80::1", "2001:db8::abcd"]),
       actor_id=st.one_of(st.none(), st.integers(1, 10**6)))
def test_the_tool_and_compute_hash_agree_on_any_event(tmp_path_factory, payload, text, ip, actor_id):
    event = _event(payload=audit._as_stored(payload), object_id=text, request_id=text, actor_label=text or "system",
                   ip=ip, actor_id=actor_id)
    _through_files(tmp_path_factory.mktemp("h"), [event])


def test_neutralised_cells_are_restored_exactly():
    for value in ("=1+1", "+1", "-1", "@x", "\tx", "\rx", "'x", "''=x", "plain", "", "1-2"):
        cell = neutralise(value)
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
        assert verify_export._unneutralise(cell) == value


def test_verify_reports_an_unknown_encoding(tmp_path, capsys):
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"hash_algorithm": "sha256", "encoding_version": 2, "format": "csv"}))
    (tmp_path / "f.csv").write_text("")
    assert verify_export.main([str(tmp_path / "f.csv"), str(manifest)]) == 2
    assert "encoding_version" in capsys.readouterr().err


def test_the_tool_imports_nothing_but_the_standard_library():
    source = (ROOT / "tools" / "verify_export.py").read_text()
    imported = {line.split()[1].split(".")[0] for line in source.splitlines()
                if line.startswith(("import ", "from ")) and "__future__" not in line}
    assert imported <= {"csv", "hashlib", "json", "sys"}
