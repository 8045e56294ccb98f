"""Eval runs on real parts: a 20-case dataset through the real worker and the fake model on
loopback gives the expected pass rate; run_eval's exit status; one-click cases keep their
provenance; two runs compared case by case, regressions first."""
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from evals import services
from evals.models import Case, CaseResult, EvalRun, Provenance, RunState
from evals.summary import compare, summarise
from tests.conftest import CUSTOMER_REPLY_INPUT, wait_for
from tests.integration.conftest import GOOD_OUTPUT, drafted, submit
from workflows.models import AuditEvent, DomainError, ReviewTask


def case(key, complaint, expect):
    return json.dumps({"id": key, "input": {**CUSTOMER_REPLY_INPUT, "complaint": complaint}, "expect": expect})


def twenty_cases() -> str:
    """17 pass and 3 fail, by construction: the fake model's markers decide what it writes."""
    lines = [case(f"routine-{i:02d}", f"Parcel {i} arrived broken. [[lane:auto]]",
                  {"fields": {"tone": {"equals": "apologetic"}, "reply": {"contains": "thank you"}}}) for i in range(12)]
    lines += [case(f"held-{i}", f"Case {i}. [[lane:blocking]]", {"lane": "blocking_review"}) for i in range(3)]
    lines += [case(f"self-talk-{i}", f"Case {i}. [[self-talk]] [[lane:auto]]", {"must_not_auto_approve": True}) for i in range(2)]
    # The three failures: a schema-breaking answer twice (the repair cannot fix it) and a wrong tone.
    lines += [case(f"invalid-{i}", f"Case {i}. [[invalid]]", {}) for i in range(2)]
    lines.append(case("wrong-tone", "Case. [[lane:auto]]", {"fields": {"tone": {"equals": "neutral"}}}))
    return "\n".join(lines)


@pytest.fixture
def dataset(demo):
    data = services.dataset_for(demo.workflows["customer-reply"], "t20")
    assert services.cases_import(dataset=data, text=twenty_cases()) == (20, 0)
    return data


def test_a_20_case_eval_on_the_workers_gives_the_expected_pass_rate(worker, dataset):
    out = StringIO()
    call_command("run_eval", "customer-reply", "--dataset", "t20", "--timeout", "120", stdout=out, stderr=StringIO())
    assert "20 cases, 17 passed, pass rate 85.0%" in out.getvalue()
    run = EvalRun.objects.get()
    assert (run.state, run.total, run.completed, run.passed) == (RunState.DONE, 20, 20, 17)
    failed = {r.case.key: r.failures for r in CaseResult.objects.filter(run=run, passed=False)}
    assert set(failed) == {"invalid-0", "invalid-1", "wrong-tone"}
    assert failed["wrong-tone"] == ["tone: expected 'neutral', got 'apologetic'"]
    assert "output does not match the workflow's schema" in failed["invalid-0"]
    summary = summarise(run)
    assert summary.schema_valid_rate == pytest.approx(18 / 20)
    assert summary.lane_mix["blocking_review"] >= 3 and "auto_approve" in summary.lane_mix
    assert summary.latency_p95_ms >= summary.latency_p50_ms > 0
    # Nothing was created on the way: an eval is not a submission.
    assert not dataset.workflow.versions.get().submissions.exists()

    # The exit status: non-zero only below --fail-under.
    with pytest.raises(CommandError, match=r"pass rate 85.0% is below --fail-under 90.0%"):
        call_command("run_eval", "customer-reply", "--dataset", "t20", "--fail-under", "0.9", "--in-process",
                     stdout=StringIO())
    out = StringIO()
    call_command("run_eval", "customer-reply", "--dataset", "t20", "--fail-under", "80%", "--in-process", stdout=out)
    assert "20 cases, 17 passed" in out.getvalue()


def test_run_eval_refuses_bad_arguments_plainly(demo, dataset):
    for args, message in [
        (["nope"], "no workflow 'nope'"), (["customer-reply", "--version", "99"], "has no version 99"),
        (["customer-reply", "--dataset", "missing"], "no dataset 'missing'"),
        (["customer-reply", "--dataset", "t20", "--fail-under", "2"], "between 0 and 1"),
    ]:
        with pytest.raises(CommandError, match=message):
            call_command("run_eval", *args, stdout=StringIO())


def test_a_reviewed_draft_becomes_a_case_in_one_click_with_its_provenance(demo, customer_reply_input):
    reviewer = demo.users["reviewer"]

    def decided(how):
        task = drafted(submit(demo, customer_reply_input), lane="blocking").review_tasks.get()
        from workflows import services as ws

        ws.review_claim(task_id=task.pk, user=reviewer)
        if how == "approve":
            ws.review_approve(task_id=task.pk, user=reviewer)
        elif how == "edit":
            ws.review_approve(task_id=task.pk, user=reviewer,
                              edited_output=json.dumps({**json.loads(GOOD_OUTPUT), "tone": "neutral"}))
        else:
            ws.review_reject(task_id=task.pk, user=reviewer, reason_code="tone", reason_text="Too cold.")
        return ReviewTask.objects.get(pk=task.pk)

    approved, edited, rejected = decided("approve"), decided("edit"), decided("reject")
    a = services.case_from_review(task_id=approved.pk, user=reviewer)
    e = services.case_from_review(task_id=edited.pk, user=reviewer)
    r = services.case_from_review(task_id=rejected.pk, user=reviewer)
    assert (a.provenance, a.expect["fields"]) == (Provenance.CAPTURED, {"tone": {"equals": "apologetic"}})
    assert (e.provenance, e.expect["fields"]) == (Provenance.CORRECTED, {"tone": {"equals": "neutral"}})
    assert r.provenance == Provenance.REJECTED and r.expect["must_not_auto_approve"] is True
    for c, task in ((a, approved), (e, edited), (r, rejected)):
        assert c.input == task.submission.data and c.dataset.name == "default"
        assert c.provenance_record == {"source": c.provenance, "by": "reviewer", "submission": task.submission_id,
                                       "version": task.submission.workflow_version.number}
    with pytest.raises(DomainError, match="already a case"):
        services.case_from_review(task_id=approved.pk, user=reviewer)
    open_task = drafted(submit(demo, customer_reply_input), lane="blocking").review_tasks.get()
    with pytest.raises(DomainError, match="Decide the review first"):
        services.case_from_review(task_id=open_task.pk, user=reviewer)
    assert Case.objects.count() == 3


def test_two_runs_compared_case_by_case_regressions_first(demo, dataset):
    version = demo.version("customer-reply")
    cases = {c.key: c for c in dataset.cases.all()}
    before = EvalRun.objects.create(version=version, dataset=dataset, total=3)
    after = EvalRun.objects.create(version=version, dataset=dataset, total=3)

    def result(run, key, passed):
        CaseResult.objects.create(run=run, case=cases[key], passed=passed, failures=[] if passed else ["x"])

    result(before, "routine-00", True), result(after, "routine-00", False)   # regression
    result(before, "routine-01", False), result(after, "routine-01", True)   # fixed
    result(before, "routine-02", True), result(after, "routine-02", True)    # still passing
    result(after, "held-0", False)                                           # new failure
    kinds = [(c.key, c.kind) for c in compare(before, after)]
    assert kinds == [("routine-00", "regression"), ("held-0", "new failure"), ("routine-01", "fixed"),
                     ("routine-02", "still passing")]


def test_a_scheduled_re_run_detects_drift_and_tells_the_admins(worker, fake_model, demo, mailoutbox):
    workflow = demo.workflows["customer-reply"]
    dataset = services.dataset_for(workflow)
    services.cases_import(dataset=dataset, text="\n".join(
        case(f"tone-{i}", f"Parcel {i} broken. [[lane:auto]]", {"fields": {"tone": {"equals": "apologetic"}}})
        for i in range(10)))
    baseline = services.eval_run_here(workflow.current_version, dataset)
    assert baseline.pass_rate == 1.0
    # Same definition, same model name; the provider changed what answers to it.
    fake_model.drifted.add("gpt-4o-mini")
    from evals.tasks import drift_check

    assert drift_check() == 1
    run = EvalRun.objects.get(purpose="drift")
    wait_for(lambda: AuditEvent.objects.filter(action="eval.drift_detected").exists(), timeout=60,
             message="drift detected")
    run.refresh_from_db()
    assert run.pass_rate == 0.0
    event = AuditEvent.objects.get(action="eval.drift_detected")
    assert event.payload == {"run": run.pk, "previous_run": baseline.pk, "pass_rate": 0.0, "previous_pass_rate": 1.0}
    # Compared in-process again (the worker already did, and e-mailed from its own process): the
    # admins are told here too, and a steady re-run on an unchanged provider records nothing.
    assert services.drift_compare(run.pk) == "drift"
    assert mailoutbox[0].subject == "ReviewDesk: eval drift on Customer reply" and mailoutbox[0].to == ["wfadmin@example.com"]
    fake_model.drifted.clear()
    steady = services.eval_run_here(workflow.current_version, dataset)
    EvalRun.objects.filter(pk=steady.pk).update(purpose="drift")
    assert services.drift_compare(steady.pk) == "steady"


def test_a_judge_rubric_counts_only_once_its_agreement_with_reviewers_is_shown(transactional_db, demo, fake_model):
    """The fake judge grades by the [[qa-grade:G]] marker in the request it grades. 20 reviewed
    cases: the judge agrees with the reviewer on 18 (90% >= 80%); then the rubric gates."""
    from evals import judge
    from evals.models import Case as CaseRow

    workflow = demo.workflows["customer-reply"]
    dataset = services.dataset_for(workflow)
    rubric = "The reply apologises and offers a next step."
    for i in range(20):
        reviewer_ok = i % 2 == 0
        judge_ok = reviewer_ok if i >= 2 else not reviewer_ok  # the first two: the judge disagrees
        CaseRow.objects.create(
            dataset=dataset, key=f"reviewed-{i:02d}", provenance=Provenance.CAPTURED,
            input={**CUSTOMER_REPLY_INPUT, "complaint": f"Case {i}. [[qa-grade:{0.9 if judge_ok else 0.1}]]"},
            expect={"rubric": rubric}, reference_output=GOOD_OUTPUT,
            reviewer_label="unchanged" if reviewer_ok else "rejected")
    services.cases_import(dataset=dataset, text=case(
        "graded-low", "Parcel broken. [[qa-grade:0.2]] [[lane:blocking]]", {"rubric": rubric}))

    before = services.eval_run_here(workflow.current_version, dataset)
    low = before.results.get(case__key="graded-low")
    assert low.passed and low.judge_grade == pytest.approx(0.2)
    assert low.judge_failures == ["judge: grade 0.20 < 0.50: promises a refund the form does not allow"]
    assert not judge.trusted(dataset)

    agreement = judge.measure(dataset, actor=demo.users["wfadmin"])
    assert (agreement.cases, agreement.agreed, agreement.rate) == (20, 18, 0.9) and judge.trusted(dataset)
    assert agreement.details[0] == {"case": "reviewed-00", "reviewer": "acceptable", "judge": "not acceptable", "grade": 0.1}

    after = services.eval_run_here(workflow.current_version, dataset)
    low = after.results.get(case__key="graded-low")
    assert not low.passed and low.failures == low.judge_failures
