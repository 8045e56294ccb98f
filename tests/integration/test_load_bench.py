"""The load bench (tests/bench/load.py, `make bench-load`) works end to end, so it cannot rot.

It runs for a few seconds at a tiny rate (--smoke): its own database, gunicorn with one uvicorn
worker, one Celery worker, the fake model server, and locust with two reviewers and three
submitters going through the real pages. The figures are not judged here (a busy machine
changes them); what must hold is what the bench reports as its checks: submissions made
through the wizard, every one of them in the database and routed or failed with a reason,
no 5xx, reviewers' decisions recorded, an intact audit chain.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.services


def test_the_load_bench_runs_end_to_end_at_a_tiny_rate(tmp_path):
    summary_path = tmp_path / "summary.json"
    database_url = os.environ["DATABASE_URL"]
    env = {
        **os.environ,
        # The bench creates and drops its own database on this server, and uses its own
        # REVIEWDESK_NAMESPACE in this Redis database.
        "BENCH_PG_URL": urlunsplit(urlsplit(database_url)._replace(path="/postgres")),
        "BENCH_REDIS_URL": os.environ["REDIS_URL"],
    }
    for name in ("DATABASE_URL", "REDIS_URL", "REVIEWDESK_NAMESPACE", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    run = subprocess.run([sys.executable, "-m", "tests.bench.load", "--smoke", "--json", str(summary_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    output = run.stdout[-6000:] + run.stderr[-3000:]
    assert run.returncode == 0, output
    summary = json.loads(summary_path.read_text())
    acc = summary["accounting"]
    assert acc["seen"] >= 2, output  # the wizard created submissions, and locust saw their ids
    assert acc["missing"] == 0 and acc["in_db"] == acc["seen"], output
    assert acc["pending"] == 0, output  # the queue drained
    assert acc["routed"] + acc["failed"] == acc["in_db"] and acc["failed_no_reason"] == 0, output
    assert acc["chain_ok"], output
    for phase in summary["steps"] + [summary["spike"]]:
        assert phase["status"].get("5xx", 0) == 0, output
        assert phase["status"].get("unexpected", 0) == 0, output
        assert phase["submitted"] > 0, output
    decided = sum(summary["decisions"].get(kind, 0) for kind in ("approved", "approved with an edit", "rejected"))
    assert decided >= 1, output  # reviewers claimed and decided through the real pages
    assert summary["missed"] == [], output
    assert "highest sustained submission rate" in run.stdout
