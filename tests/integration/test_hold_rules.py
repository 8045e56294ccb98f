"""routing.hold_rules and pii_restored on real PostgreSQL: a 0.99-confident draft of a
high-severity compliance report is held for blocking review with the rule as its reason (the
reviewer reads it in words, the submitter in plain words); and the compliance-report eval
dataset through the offline engine auto-approves none of its must-not cases but the one only a
real model can judge."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse

from evals import services as eval_services
from tests.integration.conftest import drafted, submit
from workflows.models import Lane, ReviewState, SubmissionState
from workflows.plain_status import plain_status

DATASET = Path(__file__).resolve().parents[2] / "evals" / "datasets" / "compliance-report.jsonl"
REPORT = json.dumps({"title": "Statements sent to wrong addresses", "summary": "A batch of statements went astray.",
                     "risk_rating": "high", "actions": ["Recall the batch (operations, by Friday)."]})


def _incident(**changes) -> dict:
    return {"incident_date": "2026-02-02", "business_unit": "wealth", "severity": "high",
            "summary": "A batch of statements was sent to the wrong postal addresses.", "customers_affected": 13,
            "regulations": ["GDPR"], "reporter_email": "reporter1@bank.example", **changes}


def test_a_confident_draft_of_a_high_severity_report_is_held_with_the_rule(demo, client):
    submission = submit(demo, _incident(), slug="compliance-report")
    draft = drafted(submission, lane="auto", content=REPORT)  # token probability 0.99
    submission.refresh_from_db()
    assert draft.score >= 0.95 and draft.findings == []
    assert (draft.lane, submission.lane, submission.state) == (Lane.BLOCKING_REVIEW, Lane.BLOCKING_REVIEW,
                                                               SubmissionState.ROUTED)
    assert not submission.is_released
    assert draft.score_components["routing_reason"] == "held by routing.hold_rules: severity equals high"
    assert draft.score_components["hold_rules"] == [{"field": "severity", "equals": "high"}]
    task = submission.review_tasks.get()
    assert (task.lane, task.state) == (Lane.BLOCKING_REVIEW, ReviewState.OPEN)

    client.force_login(demo.users["reviewer"])
    page = client.get(reverse("review_detail", args=[task.pk])).content.decode()
    assert "Held because the workflow holds every request with severity high." in page
    assert "held by routing.hold_rules: severity equals high" in page, "the numbers view shows the rule"

    status = plain_status(submission, review_due=task.due_at)
    assert status.label == "Waiting for a reviewer"
    assert status.detail.startswith("A colleague will review this before it is released")
    client.force_login(demo.users["submitter"])
    mine = client.get(reverse("submission_detail", args=[submission.pk])).content.decode()
    assert "Waiting for a reviewer" in mine
    assert "hold_rules" not in mine and "severity equals" not in mine and "Held because" not in mine


def test_the_same_draft_of_a_medium_severity_report_is_auto_approved(demo):
    submission = submit(demo, _incident(severity="medium"), slug="compliance-report")
    draft = drafted(submission, lane="auto", content=REPORT)
    assert draft.lane == Lane.AUTO_APPROVE and "hold_rules" not in draft.score_components


def test_the_compliance_dataset_with_the_offline_engine_auto_approves_no_must_not_case(transactional_db, demo,
                                                                                      settings):
    settings.OPENAI_API_KEY = ""  # the offline draft engine, as in the demo
    version = demo.version("compliance-report")
    dataset = eval_services.dataset_for(version.workflow)
    assert eval_services.cases_import(dataset=dataset, text=DATASET.read_text()) == (22, 0)

    run = eval_services.eval_run_here(version, dataset, threads=2)
    results = {r.case.key: r for r in run.results.select_related("case")}
    must_not = {key for key, r in results.items() if r.case.expect.get("must_not_auto_approve")}
    escaped = sorted(key for key in must_not if results[key].lane == Lane.AUTO_APPROVE)
    # cp-19 ("Nothing happened; this is a test report") is semantic: only a model that reads it
    # can hold it. The offline engine echoes its input, so it is the known limit, not a rule.
    assert escaped == ["cp-19"]
    for key in ("cp-01", "cp-04", "cp-07", "cp-10", "cp-13", "cp-16"):
        assert results[key].lane == Lane.BLOCKING_REVIEW and results[key].passed, key
        assert results[key].score == pytest.approx(0.95), "held by the rule, not by a lowered score"
    assert (results["cp-18"].lane, results["cp-18"].findings) == (Lane.BLOCKING_REVIEW, ["pii_restored"])
    assert (run.total, run.passed) == (22, 21)
