"""Versions with a lifecycle and the publish gate (issue 6, sections 1 and 3): a candidate is
measured before it becomes current; a regressing candidate is refused, an override is audited,
a rollback publishes an earlier definition again as a new number through the same gate.
The evals run in this process against the fake model on loopback (the command-line path)."""
import json

import pytest
import yaml

from evals import services as evals
from tests.conftest import CUSTOMER_REPLY_INPUT
from tests.integration.conftest import DEMO_WORKFLOWS
from workflows import services
from workflows.definitions import parse_definition
from workflows.models import AuditEvent, DomainError, Workflow


def variant(**routing):
    definition = yaml.safe_load((DEMO_WORKFLOWS / "customer-reply.yaml").read_text())
    definition["slug"] = "gated-reply"
    definition["routing"].update(routing)
    return parse_definition(definition)


def dataset_text():
    """Ten sure drafts that keep their tone, ten middling ones that must never skip a human."""
    lines = [json.dumps({"id": f"sure-{i}", "input": {**CUSTOMER_REPLY_INPUT, "complaint": f"Box {i} broken. [[lane:auto]]"},
                         "expect": {"fields": {"tone": {"equals": "apologetic"}}}}) for i in range(10)]
    lines += [json.dumps({"id": f"unsure-{i}", "input": {**CUSTOMER_REPLY_INPUT, "complaint": f"Odd case {i}. [[lane:async]]"},
                          "expect": {"must_not_auto_approve": True}}) for i in range(10)]
    return "\n".join(lines)


@pytest.fixture
def gated(transactional_db, demo, fake_model):
    v1, created = services.workflow_publish(spec=variant(), reason="first")
    assert created and v1.published_at is not None
    # The first version had no dataset: published, recorded as not measured.
    event = AuditEvent.objects.get(action="workflow.published", workflow_version=v1)
    assert event.payload["gate"] == {"ok": True, "measured": False, "reasons": [], "note": "no eval dataset: nothing measured"}
    evals.cases_import(dataset=evals.dataset_for(v1.workflow), text=dataset_text())
    return v1


def test_a_candidate_is_not_what_submitters_get_until_published(gated):
    candidate, created = services.version_candidate(spec=variant(auto_approve_at=0.95), note="stricter")
    assert created and candidate.is_candidate and candidate.number == 2
    assert Workflow.objects.get(slug="gated-reply").current_version == gated
    # From the page, publishing needs the candidate's eval first (it is not run inside a request).
    with pytest.raises(services.PublishRefused, match="has no finished eval on default: run it first"):
        services.version_publish(version_id=candidate.pk, reason="stricter")


def test_a_dry_run_of_one_case_is_not_a_measurement(gated, demo):
    """The editor's dry run runs one chosen case; its pass is no evidence about the version."""
    from django.utils import timezone

    from evals.models import CaseResult, EvalRun, RunPurpose, RunState

    candidate, _ = services.version_candidate(spec=variant(auto_approve_at=0.70), note="more automation")
    dataset = evals.dataset_for(candidate.workflow)
    dry = EvalRun.objects.create(version=candidate, dataset=dataset, purpose=RunPurpose.DRY_RUN, state=RunState.DONE,
                                 total=1, completed=1, passed=1, finished_at=timezone.now())
    CaseResult.objects.create(run=dry, case=dataset.cases.get(key="sure-0"), passed=True, lane="auto_approve")
    with pytest.raises(services.PublishRefused, match="has no finished eval on default: run it first"):
        services.version_publish(version_id=candidate.pk, reason="more automation")
    assert Workflow.objects.get(slug="gated-reply").current_version == gated
    # Measured on the whole dataset, it is refused for what it is.
    with pytest.raises(services.PublishRefused, match="10 case\\(s\\) that must not auto-approve would"):
        services.version_publish(version_id=candidate.pk, reason="more automation", run_missing=True)


def test_a_regressing_candidate_is_refused_and_an_override_is_audited(gated, demo):
    admin = demo.users["wfadmin"]
    candidate, _ = services.version_candidate(spec=variant(auto_approve_at=0.70), actor=admin)
    with pytest.raises(services.PublishRefused) as refused:
        services.version_publish(version_id=candidate.pk, actor=admin, reason="more automation", run_missing=True)
    reasons = refused.value.reasons
    assert reasons[0].startswith("10 case(s) that must not auto-approve would: unsure-0, unsure-1")
    assert reasons[1] == ("pass rate 50.0% against v1's 100.0%: a drop of 50.0%, beyond the margin of 5.0%")
    assert Workflow.objects.get(slug="gated-reply").current_version == gated
    assert not AuditEvent.objects.filter(action="workflow.published", workflow_version=candidate).exists()

    with pytest.raises(DomainError, match="already published"):
        services.version_publish(version_id=gated.pk, actor=admin)
    services.version_publish(version_id=candidate.pk, actor=admin, reason="more automation",
                             override="Accepting the risk for a one-day trial; reviewers sample 50%.")
    assert Workflow.objects.get(slug="gated-reply").current_version == candidate
    overridden = AuditEvent.objects.get(action="workflow.publish_overridden")
    assert overridden.actor_id == admin.pk and overridden.payload["override"].startswith("Accepting the risk")
    assert overridden.payload["gate"]["reasons"] == reasons
    published = AuditEvent.objects.get(action="workflow.published", workflow_version=candidate)
    assert published.payload["overridden"] is True and published.payload["previous"] == 1
    assert published.payload["gate"]["baseline_pass_rate"] == 1.0 and published.payload["gate"]["pass_rate"] == 0.5

    # Roll back to v1: its definition again, as v3, through the gate (which it passes).
    v3 = services.version_rollback(to_version_id=gated.pk, actor=admin, reason="trial over", run_missing=True)
    assert (v3.number, v3.definition_hash, v3.note) == (3, gated.definition_hash, "rollback to v1")
    assert Workflow.objects.get(slug="gated-reply").current_version == v3
    assert AuditEvent.objects.get(action="workflow.rolled_back").payload == {
        "slug": "gated-reply", "to": 1, "as": 3, "reason": "trial over"}
    assert AuditEvent.objects.get(action="workflow.published", workflow_version=v3).payload["gate"]["ok"] is True
    with pytest.raises(DomainError, match="already has v1's definition"):
        services.version_rollback(to_version_id=gated.pk, actor=admin)
