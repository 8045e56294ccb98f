"""The audit trail and simple-history over a whole run, and the one-transaction rule."""
import json

import pytest

from tests.integration.conftest import completion, drafted, submit, wait_routed
from workflows import audit, services
from workflows.models import AuditEvent, DomainError, Draft, ReviewState, ReviewTask, Submission, SubmissionState
from workflows.roles import SYSTEM_USERNAME


def _run_blocking_review(demo, customer_reply_input, *, edited_output=None):
    """create -> generate (worker) -> route -> claim -> approve; returns (submission, task)."""
    customer_reply_input["complaint"] += " [[lane:blocking]]"
    submission = wait_routed(submit(demo, customer_reply_input).pk)
    task = submission.review_tasks.get(state=ReviewState.OPEN)
    reviewer = demo.users["reviewer"]
    services.review_claim(task_id=task.pk, user=reviewer)
    services.review_approve(task_id=task.pk, user=reviewer, edited_output=edited_output)
    return Submission.objects.get(pk=submission.pk), ReviewTask.objects.get(pk=task.pk)


def test_a_full_run_writes_every_event_in_order_and_the_chain_verifies(worker, fake_model, demo, customer_reply_input):
    first_id = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    submission, task = _run_blocking_review(demo, customer_reply_input)
    draft = submission.latest_draft
    audit.chain_now()  # events are linked after their commit (migration 0012); the worker may have done it

    events = list(AuditEvent.objects.filter(id__gt=first_id).order_by("id"))
    assert [(e.action, e.actor_label, e.object_type, e.object_id) for e in events] == [
        ("submission.created", "submitter", "submission", str(submission.pk)),
        ("draft.generation_started", "system", "submission", str(submission.pk)),
        ("draft.generated", "system", "draft", str(draft.pk)),
        ("draft.routed", "system", "submission", str(submission.pk)),
        ("review.claimed", "reviewer", "reviewtask", str(task.pk)),
        ("review.approved", "reviewer", "reviewtask", str(task.pk)),
        ("output.released", "reviewer", "submission", str(submission.pk)),
    ]
    version = submission.workflow_version
    assert all(e.workflow_version == version for e in events)
    assert events[0].payload["input_hash"] == audit.content_hash(audit.canonical_json(submission.data))
    assert events[1].payload == {"attempt": 1, "retaken_stale_claim": False}
    assert events[2].payload["draft_hash"] == draft.content_hash
    assert events[3].payload["lane"] == "blocking_review"
    assert events[5].payload["draft_hash"] == events[5].payload["final_hash"] == draft.content_hash
    assert events[6].payload["output_hash"] == draft.content_hash
    # Each event links to the one before it, and the whole chain verifies.
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(events, events[1:]))
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + len(events)))
    report = audit.verify_chain()
    assert report.ok, report.reason
    assert report.checked == AuditEvent.objects.count()
    assert report.head == events[-1].hash


# --- one transaction: a refused or failed change leaves no event behind -------------------


def test_a_refused_edit_leaves_no_event(demo, customer_reply_input):
    task = drafted(submit(demo, customer_reply_input)).review_tasks.get()
    reviewer = demo.users["reviewer"]
    services.review_claim(task_id=task.pk, user=reviewer)
    count = AuditEvent.objects.count()
    with pytest.raises(DomainError):
        services.review_approve(task_id=task.pk, user=reviewer, edited_output=json.dumps({"reply": "x", "tone": "rude"}))
    assert AuditEvent.objects.count() == count
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok


def test_a_decision_that_fails_after_its_event_rolls_the_event_back(demo, customer_reply_input, monkeypatch):
    task = drafted(submit(demo, customer_reply_input)).review_tasks.get()
    reviewer = demo.users["reviewer"]
    services.review_claim(task_id=task.pk, user=reviewer)
    count = AuditEvent.objects.count()

    def fail_release(*args, **kwargs):
        raise DomainError("simulated failure after review.approved was recorded")

    monkeypatch.setattr(services.reviews, "release", fail_release)
    with pytest.raises(DomainError, match="simulated"):
        services.review_approve(task_id=task.pk, user=reviewer)

    assert AuditEvent.objects.count() == count
    assert not AuditEvent.objects.filter(action="review.approved").exists()
    task.refresh_from_db()
    assert task.state == ReviewState.OPEN and task.decision == ""
    assert Submission.objects.get(pk=task.submission_id).state == SubmissionState.ROUTED


def test_a_draft_that_fails_after_its_events_rolls_them_back(demo, customer_reply_input, monkeypatch):
    submission = submit(demo, customer_reply_input)
    claimed = services.generation_claim(submission_id=submission.pk)
    count = AuditEvent.objects.count()

    def fail_due(*args, **kwargs):
        raise RuntimeError("simulated failure while queueing the review")

    monkeypatch.setattr(services.drafts, "_review_due", fail_due)
    with pytest.raises(RuntimeError, match="simulated"):
        services.draft_record(submission_id=submission.pk, attempt=claimed.attempts, result=completion("blocking"))

    assert AuditEvent.objects.count() == count
    assert not Draft.objects.filter(submission=submission).exists()
    submission.refresh_from_db()
    assert submission.state == SubmissionState.GENERATING and submission.lane == ""


# --- simple-history ----------------------------------------------------------------------


def _history(obj):
    return [(h.history_change_reason, h.history_user.username if h.history_user else None)
            for h in obj.history.order_by("history_date", "history_id")]


def test_history_names_the_acting_user_and_a_reason(worker, fake_model, demo, customer_reply_input):
    edited = json.dumps({"reply": "Dear Ann, a replacement ships today.", "tone": "apologetic"})
    submission, task = _run_blocking_review(demo, customer_reply_input, edited_output=edited)
    draft = submission.latest_draft

    assert _history(submission) == [
        ("submitted", "submitter"),
        ("generation attempt 1", SYSTEM_USERNAME),
        ("routed to blocking_review", SYSTEM_USERNAME),
        ("edit", "reviewer"),
    ]
    assert _history(draft) == [("draft generated", SYSTEM_USERNAME)]
    assert _history(task) == [("review queued", SYSTEM_USERNAME), ("claimed", "reviewer"), ("edit", "reviewer")]
    latest = submission.history.latest()
    assert latest.state == SubmissionState.APPROVED and latest.final_output == edited
