"""Audit export throughput and memory against PostgreSQL's own COPY of the same rows.

    python -m tests.bench.bench_export [--events 1000000] [--pg-url postgres://postgres@127.0.0.1:5432/postgres]

Creates its own database (reviewdesk_bench_export_<pid>, dropped at the end), migrates it,
fills it with a valid chain of N events through COPY FROM (hashes computed in Python with the
chain's encoding), then exports everything as JSON Lines and as CSV through
workflows.audit_export (each in a fresh child process, so its peak RSS is its own) and
compares rows/s with `COPY (SELECT ...) TO STDOUT` of the same rows. Targets: export >= 0.3 of
COPY, peak RSS < 150 MB. Also runs tools/verify_export.py over the JSON Lines file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENESIS_HASH = "0" * 64
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode
_COPY_COLUMNS = ("created_at, actor_id, actor_label, action, object_type, object_id, workflow_version_id, "
                 "payload, request_id, ip, seq, prev_hash, hash")
_ACTIONS = ("submission.created", "draft.generated", "draft.routed", "review.approved", "output.released")
_IPS = (None, "10.1.2.3", "2001:db8::7")


def insert_chain(cursor, count: int, *, start: datetime | None = None, actor: str = "system",
                 object_type: str = "bench") -> str:
    """Append ``count`` valid chained events after the current head with COPY FROM, on a psycopg
    cursor inside a transaction; returns the new head. Same hash as workflows.audit.compute_hash."""
    # Already linked (seq, prev_hash, hash), as the chainer would link them: the bench fills as
    # the table owner, whom the insert trigger lets write linked rows (migration 0012).
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [7_302_114_001])
    cursor.execute("SELECT seq, hash FROM workflows_auditevent WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1")
    found = cursor.fetchone()
    head_seq, head = found if found else (0, GENESIS_HASH)
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    sha256 = hashlib.sha256
    with cursor.copy(f"COPY workflows_auditevent ({_COPY_COLUMNS}) FROM STDIN") as copy:
        for i in range(count):
            # every thousandth at a whole second: isoformat() then has no fraction
            created = start + timedelta(milliseconds=i)
            ip = _IPS[i % 3]
            payload = {"n": i, "input_hash": sha256(str(i).encode()).hexdigest(), "lane": "auto", "note": "ok ✓"}
            fields = {
                "created_at": created.isoformat(), "actor": actor, "actor_id": None,
                "action": _ACTIONS[i % 5], "object_type": object_type, "object_id": str(i),
                "workflow_version": None, "payload": payload, "request_id": f"req-{i}", "ip": ip,
            }
            digest = sha256((head + _encode(fields)).encode()).hexdigest()
            copy.write_row((created, None, actor, fields["action"], object_type, str(i), None, _encode(payload),
                            fields["request_id"], ip, head_seq + 1 + i, head, digest))
            head = digest
    return head


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_export(fmt: str, output: str) -> None:
    """In a child process: export everything through the app's exporter, print JSON stats."""
    import django

    django.setup()
    from workflows.audit_export import Export

    rss_before = _peak_rss_mb()
    began = time.perf_counter()
    export = Export(fmt)
    with open(output, "wb") as out:
        for chunk in export.chunks():
            out.write(chunk)
    seconds = time.perf_counter() - began
    print(json.dumps({"rows": export.row_count, "seconds": seconds, "bytes": os.path.getsize(output),
                      "rss_before_mb": rss_before, "peak_rss_mb": _peak_rss_mb()}))


def _copy_out(db_url: str, fmt: str) -> dict:
    import psycopg

    sql = (f"COPY (SELECT id, created_at, actor_label, actor_id, action, object_type, object_id, "
           f"workflow_version_id, payload, request_id, ip, seq, prev_hash, hash FROM workflows_auditevent ORDER BY seq) "
           f"TO STDOUT{' WITH (FORMAT csv, HEADER)' if fmt == 'csv' else ''}")
    began = time.perf_counter()
    size = 0
    with psycopg.connect(db_url) as conn, conn.cursor() as cursor, cursor.copy(sql) as copy:
        for block in copy:
            size += len(block)
    seconds = time.perf_counter() - began
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT count(*) FROM workflows_auditevent").fetchone()[0]
    return {"rows": rows, "seconds": seconds, "bytes": size}


def run(pg_url: str, report=print, *, events: int = 1_000_000) -> list[dict]:
    import psycopg

    name = f"reviewdesk_bench_export_{os.getpid()}"
    admin_url = pg_url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = pg_url.rsplit("/", 1)[0] + f"/{name}"
    env = {**os.environ, "DATABASE_URL": db_url, "DJANGO_SETTINGS_MODULE": "reviewdesk.settings",
           "PYTHONPATH": str(ROOT)}
    results = []
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        began = time.perf_counter()
        with psycopg.connect(db_url) as conn, conn.cursor() as cursor:
            insert_chain(cursor, events)
        report(f"created {events:,} chained events in {time.perf_counter() - began:.1f}s")
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE workflows_auditevent")
        with tempfile.TemporaryDirectory() as tmp:
            for fmt in ("jsonl", "csv"):
                baseline = _copy_out(db_url, fmt)
                output = os.path.join(tmp, f"audit.{fmt}")
                child = subprocess.run(
                    [sys.executable, "-c", f"from tests.bench.bench_export import _child_export; "
                                           f"_child_export({fmt!r}, {output!r})"],
                    cwd=ROOT, env=env, check=True, capture_output=True, text=True)
                stats = json.loads(child.stdout.strip().splitlines()[-1])
                results.append({
                    "format": fmt, "rows": stats["rows"],
                    "export_rows_s": stats["rows"] / stats["seconds"],
                    "copy_rows_s": baseline["rows"] / baseline["seconds"],
                    "ratio": (stats["rows"] / stats["seconds"]) / (baseline["rows"] / baseline["seconds"]),
                    "peak_rss_mb": stats["peak_rss_mb"],
                    "mb": stats["bytes"] / 1e6,
                })
            # The JSON Lines file must verify offline (manifest made in-process by a second pass).
            manifest_path = os.path.join(tmp, "audit.jsonl.manifest.json")
            subprocess.run(
                [sys.executable, "-c", "import django, json; django.setup();"
                 "from workflows.audit_export import Export;"
                 f"json.dump(Export('jsonl').run().manifest(exported_by='bench'), open({manifest_path!r}, 'w'))"],
                cwd=ROOT, env=env, check=True)
            began = time.perf_counter()
            verified = subprocess.run([sys.executable, str(ROOT / "tools" / "verify_export.py"),
                                       os.path.join(tmp, "audit.jsonl"), manifest_path],
                                      capture_output=True, text=True)
            report(f"verify_export.py on the JSON Lines file: exit {verified.returncode} in "
                   f"{time.perf_counter() - began:.1f}s: {(verified.stdout or verified.stderr).strip()[:160]}")
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    report(f"{'format':6} {'rows':>10} {'export rows/s':>14} {'COPY rows/s':>12} {'ratio':>6} "
           f"{'peak RSS MB':>12} {'file MB':>8}")
    for r in results:
        report(f"{r['format']:6} {r['rows']:>10,} {r['export_rows_s']:>14,.0f} {r['copy_rows_s']:>12,.0f} "
               f"{r['ratio']:>6.2f} {r['peak_rss_mb']:>12.0f} {r['mb']:>8.0f}")
    report("targets: ratio >= 0.30 of COPY, peak RSS < 150 MB")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    run(args.pg_url, events=args.events)


if __name__ == "__main__":
    main()
