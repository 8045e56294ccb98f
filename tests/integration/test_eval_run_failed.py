"""An eval run that cannot finish fails, with a reason (evals/models.py RunState.FAILED), against
PostgreSQL, Redis (the broker the sweep sends to) and the fake model on loopback:

* the sweep fails a run still stalled after EVAL_RESENDS re-sends, or whose cases cannot be told,
  and gives re-sent cases a whole stall period first;
* an error outside the per-case checks fails the run at once (a case task, or the in-process
  runner), while a database that is briefly away leaves the run to the sweep;
* the publish gate never counts a failed run: "the eval run failed: <reason>; run it again".

Faults come from PostgreSQL itself: a trigger on the results table raises the error a real
server would (internal error, disk full), so the code under test runs unchanged.
"""
from __future__ import annotations

import json
import logging
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import InternalError, OperationalError, connection
from django.utils import timezone

from evals import gate, services, tasks
from evals.expectations import Outcome
from evals.models import CaseResult, EvalRun, RunPurpose, RunState
from tests.conftest import CUSTOMER_REPLY_INPUT
from tests.integration.conftest import unique_marker
from tests.integration.test_publish_gate import dataset_text, variant
from workflows import services as workflow_services

STALL = 60


def _cases(marker: str, n: int) -> str:
    return "\n".join(json.dumps({"id": f"{marker}-{i}", "input": {
        **CUSTOMER_REPLY_INPUT, "complaint": f"Parcel {i} arrived broken. {marker}-{i} [[lane:auto]]"},
        "expect": {}}) for i in range(n))


def _outcome() -> Outcome:
    return Outcome(content='{"reply": "Thank you", "tone": "apologetic"}', parsed={"reply": "Thank you", "tone": "apologetic"},
                   schema_valid=True, lane="auto_approve", score=0.95, findings=(), cost_usd=Decimal("0.001"), latency_ms=100)


def _refuse_results(cursor, errcode: str, message: str) -> None:
    """PostgreSQL refuses every new case result with ``errcode``, as a failing server would."""
    cursor.execute(f"""
        CREATE OR REPLACE FUNCTION test_refuse_case_result() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '{message}' USING ERRCODE = '{errcode}'; END $$;
        DROP TRIGGER IF EXISTS test_refuse_case_result ON evals_caseresult;
        CREATE TRIGGER test_refuse_case_result BEFORE INSERT ON evals_caseresult
            FOR EACH ROW EXECUTE FUNCTION test_refuse_case_result();""")


def _accept_results(cursor) -> None:
    cursor.execute("DROP TRIGGER IF EXISTS test_refuse_case_result ON evals_caseresult;"
                   "DROP FUNCTION IF EXISTS test_refuse_case_result();")


# --- the sweep ---------------------------------------------------------------------------------


@pytest.fixture
def stalled(demo, settings):
    """A three-case run started two hours ago with one case finished then: stalled since."""
    settings.REVIEWDESK_EVAL_STALL_SECONDS = STALL
    marker = unique_marker()
    dataset = services.dataset_for(demo.workflows["customer-reply"], f"stall-{marker}")
    services.cases_import(dataset=dataset, text=_cases(marker, 3))
    long_ago = timezone.now() - timedelta(hours=2)
    dataset.cases.update(created_at=long_ago - timedelta(minutes=1))
    run = EvalRun.objects.create(version=demo.version("customer-reply"), dataset=dataset, total=3, started_at=long_ago)
    services.eval_case_done(run=run, case=dataset.cases.order_by("key").first(), outcome=_outcome(), failures=[])
    CaseResult.objects.filter(run=run).update(created_at=long_ago)
    return run


def test_the_sweep_re_sends_a_stalled_run_three_times_then_fails_it_with_the_reason(stalled, caplog):
    caplog.set_level(logging.WARNING, logger="evals.services")
    now = timezone.now()
    for attempt in range(1, services.EVAL_RESENDS + 1):
        assert services.eval_runs_sweep(now) == {"resent": 2, "failed": 0}
        run = EvalRun.objects.get(pk=stalled.pk)
        assert (run.state, run.resends, run.resent_at) == (RunState.RUNNING, attempt, now)
        assert f"re-sent 2 (try {attempt} of {services.EVAL_RESENDS})" in caplog.text
        # The re-sent cases get a whole stall period before the run counts as stalled again
        # (a sweep every REVIEWDESK_SWEEP_SECONDS must not spend the three tries in a minute).
        assert services.eval_runs_sweep(now + timedelta(seconds=STALL - 1)) == {"resent": 0, "failed": 0}
        now += timedelta(seconds=STALL + 1)

    assert services.eval_runs_sweep(now) == {"resent": 0, "failed": 1}
    run = EvalRun.objects.get(pk=stalled.pk)
    assert run.state == RunState.FAILED and run.finished_at is not None
    assert run.failure_reason == ("no case finished, even after the missing cases were sent again 3 times "
                                  "(a worker keeps stopping inside them)")
    assert f"eval run {run.pk} failed: no case finished" in caplog.text
    # Failed for good: later sweeps leave it alone, and a late case changes neither its state
    # nor lets it close as done.
    assert services.eval_runs_sweep(now + timedelta(hours=1)) == {"resent": 0, "failed": 0}
    late = run.dataset.cases.order_by("key").last()
    services.eval_case_done(run=run, case=late, outcome=_outcome(), failures=[])
    assert EvalRun.objects.get(pk=run.pk).state == RunState.FAILED


def test_a_stalled_run_whose_cases_cannot_be_told_fails_at_once(stalled):
    dry = EvalRun.objects.create(version=stalled.version, dataset=stalled.dataset, total=1, purpose="dry_run",
                                 started_at=stalled.started_at)
    assert services.missing_cases(dry) is None
    assert services.eval_runs_sweep() == {"resent": 2, "failed": 1}  # the full run is re-sent, the dry run fails
    dry.refresh_from_db()
    assert dry.state == RunState.FAILED and dry.resends == 0
    assert dry.failure_reason.startswith("its worker stopped, and the cases it had left cannot be identified")


def test_a_run_that_finishes_cases_is_never_failed_by_the_sweep(stalled):
    # A case landed a moment ago: not stalled, however many re-sends it took to get here.
    EvalRun.objects.filter(pk=stalled.pk).update(resends=services.EVAL_RESENDS)
    services.eval_case_done(run=stalled, case=stalled.dataset.cases.order_by("key")[1], outcome=_outcome(), failures=[])
    assert services.eval_runs_sweep() == {"resent": 0, "failed": 0}
    assert EvalRun.objects.get(pk=stalled.pk).state == RunState.RUNNING


def test_a_drift_check_that_fails_tells_the_workflow_admins(stalled, mailoutbox, django_capture_on_commit_callbacks):
    """Nobody opens a scheduled check's page: without a mail, a drift check that could not run
    reads as "no drift". A run started by hand that fails mails nobody (its page says why)."""
    EvalRun.objects.filter(pk=stalled.pk).update(purpose=RunPurpose.DRIFT, resends=services.EVAL_RESENDS)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.eval_runs_sweep() == {"resent": 0, "failed": 1}
    (mail,) = mailoutbox
    assert mail.subject == "ReviewDesk: the eval drift check on Customer reply could not run"
    assert mail.to == ["wfadmin@example.com"]
    assert "v1 on" in mail.body and "stopped: no case finished, even after the missing cases were sent again" in mail.body
    assert f"Run #{stalled.pk}." in mail.body

    by_hand = EvalRun.objects.create(version=stalled.version, dataset=stalled.dataset, total=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.eval_run_fail(run_id=by_hand.pk, reason="a worker kept stopping")
    assert len(mailoutbox) == 1


# --- errors outside the per-case checks ------------------------------------------------------


def test_an_unexpected_error_in_a_case_task_fails_the_run_and_stops_its_other_cases(stalled, fake_model):
    run = EvalRun.objects.create(version=stalled.version, dataset=stalled.dataset, total=3)
    first, second, _ = stalled.dataset.cases.order_by("key")
    marker = first.key.rsplit("-", 1)[0]
    with connection.cursor() as cursor:
        _refuse_results(cursor, "XX000", "could not write block 7 of relation")
    with pytest.raises(InternalError):  # raised on, for the worker's log
        tasks.run_eval_case(run.pk, first.pk)
    run.refresh_from_db()
    assert run.state == RunState.FAILED
    assert run.failure_reason.startswith(f"case {first.key} stopped with an unexpected error (InternalError: "
                                         "could not write block 7 of relation")
    calls = len(fake_model.calls_for(marker))
    assert calls == 1
    # The run's other cases find it failed: no model call, no result.
    assert tasks.run_eval_case(run.pk, second.pk) is None
    assert len(fake_model.calls_for(marker)) == calls and not run.results.exists()


def test_a_database_briefly_away_leaves_the_run_to_the_sweep(stalled, fake_model):
    run = EvalRun.objects.create(version=stalled.version, dataset=stalled.dataset, total=3)
    first = stalled.dataset.cases.order_by("key").first()
    with connection.cursor() as cursor:
        _refuse_results(cursor, "53100", "could not extend file: No space left on device")  # disk_full
    with pytest.raises(OperationalError):
        tasks.run_eval_case(run.pk, first.pk)
    run.refresh_from_db()
    assert (run.state, run.failure_reason) == (RunState.RUNNING, "")  # the sweep sends the case again


@pytest.fixture
def candidate(transactional_db, demo, fake_model):
    """gated-reply v1 (current) and a candidate v2, with the gate's default dataset of 20 cases."""
    v1, _ = workflow_services.workflow_publish(spec=variant(), reason="first")
    services.cases_import(dataset=services.dataset_for(v1.workflow), text=dataset_text())
    v2, created = workflow_services.version_candidate(spec=variant(auto_approve_at=0.95), note="stricter")
    assert created
    yield v2
    with connection.cursor() as cursor:
        _accept_results(cursor)


def test_the_in_process_runner_fails_the_run_and_the_gate_refuses_it(candidate, fake_model):
    dataset = services.dataset_for(candidate.workflow)
    with connection.cursor() as cursor:
        _refuse_results(cursor, "XX000", "storage refused the result")  # committed: the runner's threads see it
    run = services.eval_run_here(candidate, dataset, threads=2)
    # Stopped at the first failure: one model call per thread at most, not one per case (20).
    assert 1 <= len(fake_model.requests) <= 2
    assert run.state == RunState.FAILED and run.completed == 0
    # The error's first line only: PostgreSQL's CONTEXT lines are for the log, not the page.
    assert run.failure_reason.endswith(" stopped with an unexpected error (InternalError: storage refused the result)")
    assert not run.results.exists()

    # The command line says so and exits non-zero.
    with pytest.raises(CommandError, match=r"(?s)eval run #\d+ failed after 0 of 20 cases: case .* stopped with an unexpected"):
        call_command("run_eval", "gated-reply", "--version", "2", "--in-process", "--threads", "2",
                     stdout=StringIO(), stderr=StringIO())

    # load_workflows --publish measures a failed candidate again here, and refuses while it fails.
    with pytest.raises(workflow_services.PublishRefused) as refused:
        workflow_services.version_publish(version_id=candidate.pk, reason="stricter", run_missing=True)
    (reason,) = refused.value.reasons
    assert reason.startswith("the eval run failed: case ") and reason.endswith("; run it again")
    assert refused.value.gate["measured"] is False and refused.value.gate["dataset"] == "default"
    assert refused.value.gate["run_failed"] == reason.removeprefix("the eval run failed: ").removesuffix("; run it again")


# --- the publish gate --------------------------------------------------------------------------


def _done_run(version, dataset) -> EvalRun:
    run = EvalRun.objects.create(version=version, dataset=dataset, total=dataset.cases.count())
    for case in dataset.cases.all():
        services.eval_case_done(run=run, case=case, outcome=_outcome(), failures=[])
    run.refresh_from_db()
    assert run.state == RunState.DONE
    return run


def _failed_run(version, dataset, reason: str) -> EvalRun:
    run = EvalRun.objects.create(version=version, dataset=dataset, total=dataset.cases.count())
    for case in dataset.cases.all()[:5]:  # five cases passed before it failed: still no pass
        services.eval_case_done(run=run, case=case, outcome=_outcome(), failures=[])
    assert services.eval_run_fail(run_id=run.pk, reason=reason)
    assert not services.eval_run_fail(run_id=run.pk, reason="a second reason")  # fails once
    run.refresh_from_db()
    return run


def test_the_gate_refuses_a_failed_run_even_after_a_good_one_until_a_new_run_is_done(candidate):
    dataset = services.dataset_for(candidate.workflow)
    _done_run(candidate.workflow.current_version, dataset)  # v1's baseline
    good = _done_run(candidate, dataset)
    assert gate.check(candidate).ok

    failed = _failed_run(candidate, dataset, "no case finished, even after the missing cases were sent again 3 times")
    assert failed.state == RunState.FAILED and failed.pass_rate == 1.0  # its five cases passed
    result = gate.check(candidate)
    assert (result.ok, result.measured) == (False, False)
    assert result.reasons == ("the eval run failed: no case finished, even after the missing cases were sent again "
                              "3 times; run it again",)
    assert result.evidence["run"] == failed.pk != good.pk
    with pytest.raises(workflow_services.PublishRefused, match="the eval run failed: no case finished"):
        workflow_services.version_publish(version_id=candidate.pk, reason="stricter")
    assert candidate.workflow.current_version.number == 1

    # Run again, done: the gate measures that run and lets the candidate through.
    again = _done_run(candidate, dataset)
    result = gate.check(candidate)
    assert result.ok and result.evidence["run"] == again.pk
    assert workflow_services.version_publish(version_id=candidate.pk, reason="stricter").number == 2
