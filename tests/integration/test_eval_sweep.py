"""Eval runs whose worker died (evals/services.py eval_runs_sweep), with real processes: a
Celery worker killed with SIGKILL in the middle of a run's model calls, beat running the sweep,
a second worker finishing the run, against this run's PostgreSQL and Redis and the fake model."""
from __future__ import annotations

import json
import signal
import time
from datetime import timedelta

from django.utils import timezone

from evals import services
from evals.models import CaseResult, EvalRun, RunState
from tests.conftest import CUSTOMER_REPLY_INPUT, wait_for
from tests.fault_rig import stop
from tests.integration.conftest import unique_marker


def _cases(marker: str, n: int, extra: str = "") -> str:
    return "\n".join(json.dumps({"id": f"{marker}-{i}", "input": {
        **CUSTOMER_REPLY_INPUT, "complaint": f"Parcel {i} arrived broken. {marker}-{i} {extra} [[lane:auto]]"},
        "expect": {}}) for i in range(n))


def test_an_eval_run_whose_worker_was_killed_is_finished_by_the_sweep_each_case_once(
        transactional_db, demo, model, rigs):
    # Stalled after 8 s without a finished case (the default is the task's time limit + 60 s);
    # the sweep runs every 2 s. Without the sweep the run would stay "running" for the broker's
    # visibility timeout (an hour).
    rig = rigs("evalkill", model_url=model.base_url, REVIEWDESK_EVAL_STALL_SECONDS=8, REVIEWDESK_SWEEP_SECONDS=2)
    first = rig.worker("first")
    marker = unique_marker()
    dataset = services.dataset_for(demo.workflows["customer-reply"], f"kill-{marker}")
    # Each case's first request hangs for a minute: the first worker dies inside all four calls.
    assert services.cases_import(dataset=dataset, text=_cases(marker, 4, "[[slow:60:1]]")) == (4, 0)
    with rig.sending():
        run = services.eval_run_start(version=demo.version("customer-reply"), dataset=dataset)
    wait_for(lambda: len(model.calls_for(marker)) == 4, timeout=60, message="the first worker inside four model calls")
    killed_at = time.monotonic()
    stop(first, signal.SIGKILL)
    assert EvalRun.objects.get(pk=run.pk).state == RunState.RUNNING
    rig.worker("second")
    rig.beat()

    done = wait_for(lambda: (r := EvalRun.objects.get(pk=run.pk)).state == RunState.DONE and r, timeout=90,
                    interval=0.5, message="the sweep to re-send the lost cases and the run to finish")
    print(f"\n[eval sigkill] run finished {time.monotonic() - killed_at:.1f} s after SIGKILL")
    assert (done.total, done.completed) == (4, 4)
    # Each case counted once, though its task ran twice (the dead attempt left nothing).
    results = list(CaseResult.objects.filter(run=run).values_list("case__key", flat=True))
    assert sorted(results) == [f"{marker}-{i}" for i in range(4)]
    for i in range(4):
        assert len(model.calls_for(f"{marker}-{i} ")) >= 2


def test_a_stalled_run_whose_cases_cannot_be_told_is_not_resent(demo, caplog):
    # A dry run of one chosen case: only the number of its cases is stored, so the sweep cannot
    # tell which one is missing; it says so instead of re-sending the wrong cases.
    marker = unique_marker()
    dataset = services.dataset_for(demo.workflows["customer-reply"], f"dry-{marker}")
    services.cases_import(dataset=dataset, text=_cases(marker, 3))
    long_ago = timezone.now() - timedelta(hours=2)
    dry = EvalRun.objects.create(version=demo.version("customer-reply"), dataset=dataset, total=1,
                                 purpose="dry_run", started_at=long_ago)
    full = EvalRun.objects.create(version=demo.version("customer-reply"), dataset=dataset, total=3,
                                  started_at=long_ago)
    dataset.cases.update(created_at=long_ago - timedelta(minutes=1))
    assert {r.pk for r in services.stalled_eval_runs()} >= {dry.pk, full.pk}
    assert services.missing_cases(dry) is None
    assert sorted(services.missing_cases(full)) == sorted(dataset.cases.values_list("pk", flat=True))
    # A run that finished a case recently is not stalled.
    CaseResult.objects.create(run=full, case=dataset.cases.first(), passed=True)
    assert full.pk not in {r.pk for r in services.stalled_eval_runs()}
    assert len(services.missing_cases(full)) == 2
