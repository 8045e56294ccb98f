"""Review services: leases, four-eyes, scope, and each decision's effect on the submission.

Drafts are recorded in-process from a hand-made completion; only regeneration needs the worker.
"""
import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from tests.integration.conftest import GOOD_OUTPUT, drafted, submit, unique_marker, wait_routed
from workflows import audit, services
from workflows.models import (
    AuditEvent,
    Decision,
    DomainError,
    IllegalTransition,
    Lane,
    ReviewState,
    ReviewTask,
    Submission,
    SubmissionState,
)


@pytest.fixture
def blocking_task(demo, customer_reply_input):
    draft = drafted(submit(demo, customer_reply_input), lane="blocking")
    return draft.review_tasks.get()


@pytest.fixture
def async_task(demo, customer_reply_input):
    draft = drafted(submit(demo, customer_reply_input), lane="async")
    return draft.review_tasks.get()


def _claimed(task, user):
    return services.review_claim(task_id=task.pk, user=user)


def _snapshot(task):
    """Everything a refused decision must leave as it was."""
    task = ReviewTask.objects.get(pk=task.pk)
    submission = Submission.objects.get(pk=task.submission_id)
    return (
        task.state, task.decision, task.edited_output, task.diff, task.history.count(),
        submission.state, submission.final_output, submission.released_at, submission.history.count(),
        AuditEvent.objects.count(),
    )


# --- leases ------------------------------------------------------------------------------


def test_a_claim_is_a_lease(demo, blocking_task):
    reviewer = demo.users["reviewer"]
    before = timezone.now()
    task = _claimed(blocking_task, reviewer)

    task.refresh_from_db()
    assert task.claimed_by == reviewer
    expected = before + timedelta(minutes=settings.REVIEWDESK_LEASE_MINUTES)
    assert expected <= task.lease_expires_at <= expected + timedelta(seconds=5)
    assert task.state == ReviewState.OPEN
    event = AuditEvent.objects.get(action="review.claimed", object_id=str(task.pk))
    assert event.actor == reviewer


def test_a_live_lease_keeps_other_reviewers_out_until_it_expires(demo, make_user, blocking_task):
    first, second = demo.users["reviewer"], make_user("second-reviewer", "reviewer", "support-reviewers")
    _claimed(blocking_task, first)

    with pytest.raises(DomainError, match="claimed by"):
        _claimed(blocking_task, second)
    with pytest.raises(DomainError, match="Claim this review first"):
        services.review_approve(task_id=blocking_task.pk, user=second)

    ReviewTask.objects.filter(pk=blocking_task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    task = _claimed(blocking_task, second)
    assert task.claimed_by == second
    # The first reviewer's lease is gone: they can no longer decide.
    with pytest.raises(DomainError, match="Claim this review first"):
        services.review_approve(task_id=blocking_task.pk, user=first)
    services.review_approve(task_id=blocking_task.pk, user=second)
    assert ReviewTask.objects.get(pk=blocking_task.pk).decided_by == second


def test_deciding_without_a_lease_is_refused(demo, blocking_task):
    reviewer = demo.users["reviewer"]
    before = _snapshot(blocking_task)
    for decide in (
        lambda: services.review_approve(task_id=blocking_task.pk, user=reviewer),
        lambda: services.review_reject(task_id=blocking_task.pk, user=reviewer, reason_code="tone", reason_text="Too curt."),
        lambda: services.review_regenerate(task_id=blocking_task.pk, user=reviewer, feedback="Be warmer."),
    ):
        with pytest.raises(DomainError, match="Claim this review first"):
            decide()
    assert _snapshot(blocking_task) == before


def test_an_expired_lease_cannot_decide(demo, blocking_task):
    reviewer = demo.users["reviewer"]
    _claimed(blocking_task, reviewer)
    ReviewTask.objects.filter(pk=blocking_task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(DomainError, match="lease may have expired"):
        services.review_approve(task_id=blocking_task.pk, user=reviewer)


# --- who may review ----------------------------------------------------------------------


def test_four_eyes_a_submitter_who_reviews_cannot_claim_their_own(demo, make_user, customer_reply_input):
    both = make_user("submitter-and-reviewer", "submitter", "reviewer", "support-reviewers")
    own = drafted(submit(demo, customer_reply_input, user=both)).review_tasks.get()
    other = drafted(submit(demo, customer_reply_input)).review_tasks.get()

    with pytest.raises(DomainError, match="four-eyes"):
        _claimed(own, both)
    assert ReviewTask.objects.get(pk=own.pk).claimed_by is None
    # The same person reviews somebody else's submission of that workflow.
    assert _claimed(other, both).claimed_by == both


def test_a_reviewer_outside_the_workflows_groups_cannot_claim(demo, make_user, blocking_task):
    outsider = make_user("underwriter", "reviewer", "underwriting-reviewers")
    with pytest.raises(DomainError, match="not a reviewer of this workflow"):
        _claimed(blocking_task, outsider)
    assert ReviewTask.objects.get(pk=blocking_task.pk).claimed_by is None
    assert not AuditEvent.objects.filter(action="review.claimed").exists()


# --- reject ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, text, message",
    [("", "Wrong facts.", "reason"), ("made-up", "Wrong facts.", "reason"), ("inaccurate", "  ", "Explain")],
)
def test_reject_needs_a_reason_code_and_text(demo, blocking_task, code, text, message):
    reviewer = demo.users["reviewer"]
    _claimed(blocking_task, reviewer)
    before = _snapshot(blocking_task)
    with pytest.raises(DomainError, match=message):
        services.review_reject(task_id=blocking_task.pk, user=reviewer, reason_code=code, reason_text=text)
    assert _snapshot(blocking_task) == before


def test_reject_a_blocking_draft(demo, blocking_task):
    reviewer = demo.users["reviewer"]
    _claimed(blocking_task, reviewer)
    services.review_reject(task_id=blocking_task.pk, user=reviewer, reason_code="inaccurate", reason_text=" Wrong date. ")

    task = ReviewTask.objects.get(pk=blocking_task.pk)
    assert (task.state, task.decision, task.reason_code, task.reason_text) == (
        ReviewState.DONE, Decision.REJECT, "inaccurate", "Wrong date."
    )
    submission = task.submission
    assert submission.state == SubmissionState.REJECTED
    assert submission.released_at is None and submission.retracted_at is None
    event = AuditEvent.objects.get(action="review.rejected")
    assert event.payload["reason_code"] == "inaccurate" and "retracted" not in event.payload
    # The rejection labels the draft for calibration, in the row and in the chain.
    assert (task.label, task.edit_distance) == ("rejected", None) and event.payload["label"] == "rejected"


def test_rejecting_a_released_async_draft_retracts_it(demo, async_task):
    submission = async_task.submission
    assert submission.is_released
    reviewer = demo.users["reviewer"]
    _claimed(async_task, reviewer)
    services.review_reject(task_id=async_task.pk, user=reviewer, reason_code="policy", reason_text="Promises a refund.")

    submission.refresh_from_db()
    assert submission.state == SubmissionState.REJECTED
    assert submission.retracted_at is not None
    assert submission.is_released is False
    assert AuditEvent.objects.get(action="review.rejected").payload["retracted"] is True
    retraction = AuditEvent.objects.get(action="output.retracted")
    assert retraction.actor_label == "reviewer" and retraction.object_id == str(submission.pk)
    assert retraction.payload == {"output_hash": audit.content_hash(submission.final_output), "reason": "rejected"}


def test_a_sampled_auto_approval_can_be_retracted(publish_variant, demo, customer_reply_input):
    version = publish_variant("customer-reply", "customer-reply-sampled", routing__audit_sample_rate=1.0)
    submission = services.submission_create(version=version, user=demo.users["submitter"], data=customer_reply_input)
    draft = drafted(submission, lane="auto")
    submission.refresh_from_db()
    assert submission.state == SubmissionState.APPROVED and submission.is_released
    task = draft.review_tasks.get()
    assert (task.lane, task.sampled) == (Lane.ASYNC_REVIEW, True)

    reviewer = demo.users["reviewer"]
    _claimed(task, reviewer)
    with pytest.raises(DomainError, match="awaiting review"):
        services.review_regenerate(task_id=task.pk, user=reviewer, feedback="Try again.")
    services.review_reject(task_id=task.pk, user=reviewer, reason_code="tone", reason_text="Too casual.")
    submission.refresh_from_db()
    assert submission.state == SubmissionState.REJECTED and not submission.is_released


# --- edit --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edited",
    [
        "Dear Ann, sorry!",  # not JSON
        json.dumps({"reply": "Dear Ann, sorry!", "tone": "furious"}),  # tone outside the enum
        json.dumps({"tone": "neutral"}),  # reply missing
    ],
)
def test_an_edit_that_breaks_the_schema_is_refused(demo, blocking_task, edited):
    reviewer = demo.users["reviewer"]
    _claimed(blocking_task, reviewer)
    before = _snapshot(blocking_task)
    with pytest.raises(DomainError, match="does not match the schema"):
        services.review_approve(task_id=blocking_task.pk, user=reviewer, edited_output=edited)
    assert _snapshot(blocking_task) == before


@pytest.mark.parametrize("edited", ["", "  \n"])
def test_an_empty_edit_is_refused(demo, blocking_task, edited):
    reviewer = demo.users["reviewer"]
    _claimed(blocking_task, reviewer)
    before = _snapshot(blocking_task)
    with pytest.raises(DomainError, match="The edited output is empty"):
        services.review_approve(task_id=blocking_task.pk, user=reviewer, edited_output=edited)
    assert _snapshot(blocking_task) == before


def test_an_edit_equal_to_the_draft_is_a_plain_approval(demo, blocking_task):
    reviewer = demo.users["reviewer"]
    _claimed(blocking_task, reviewer)
    task = services.review_approve(
        task_id=blocking_task.pk, user=reviewer, edited_output=GOOD_OUTPUT.replace("\n", "\r\n")
    )
    assert (task.decision, task.diff, task.edited_output) == (Decision.APPROVE, "", "")
    assert AuditEvent.objects.filter(action="review.approved").count() == 1
    assert not AuditEvent.objects.filter(action="review.edited").exists()


def test_reformatting_json_is_not_an_edit_but_changing_a_value_is(demo, blocking_task):
    reviewer = demo.users["reviewer"]
    _claimed(blocking_task, reviewer)
    document = json.loads(GOOD_OUTPUT)
    reindented = json.dumps(dict(reversed(list(document.items()))), indent=4)
    task = services.review_approve(task_id=blocking_task.pk, user=reviewer, edited_output=reindented)
    assert (task.decision, task.edited_output) == (Decision.APPROVE, "")
    assert (task.label, task.edit_distance) == ("unchanged", 0.0)
    task.submission.refresh_from_db()
    assert task.submission.final_output == GOOD_OUTPUT


def test_changing_one_json_value_is_an_edit(demo, blocking_task):
    reviewer = demo.users["reviewer"]
    _claimed(blocking_task, reviewer)
    document = {**json.loads(GOOD_OUTPUT), "tone": "neutral"}
    task = services.review_approve(task_id=blocking_task.pk, user=reviewer, edited_output=json.dumps(document))
    assert task.decision == Decision.EDIT
    task.submission.refresh_from_db()
    assert '"neutral"' in task.diff and json.loads(task.submission.final_output)["tone"] == "neutral"
    # One short field changed in a longer document: a small but real distance.
    assert task.label in ("minor_edit", "major_edit") and 0 < task.edit_distance < 0.5
    event = AuditEvent.objects.get(action="review.edited")
    assert (event.payload["label"], event.payload["edit_distance"]) == (task.label, task.edit_distance)


def test_rewriting_the_reply_is_a_major_edit(demo, blocking_task):
    reviewer = demo.users["reviewer"]
    _claimed(blocking_task, reviewer)
    document = json.loads(GOOD_OUTPUT)
    document["reply"] = "We have cancelled the order and refunded the full amount to your card today."
    task = services.review_approve(task_id=blocking_task.pk, user=reviewer, edited_output=json.dumps(document))
    assert task.label == "major_edit" and task.edit_distance > 0.10
    assert ReviewTask.objects.get(pk=task.pk).label == "major_edit"


# --- regenerate --------------------------------------------------------------------------


def test_regenerate_needs_feedback(demo, blocking_task):
    reviewer = demo.users["reviewer"]
    _claimed(blocking_task, reviewer)
    before = _snapshot(blocking_task)
    with pytest.raises(DomainError, match="differently"):
        services.review_regenerate(task_id=blocking_task.pk, user=reviewer, feedback=" \n ")
    assert _snapshot(blocking_task) == before


def test_regenerate_moves_to_regenerating_and_retracts_a_released_draft(demo, async_task):
    reviewer = demo.users["reviewer"]
    _claimed(async_task, reviewer)
    services.review_regenerate(task_id=async_task.pk, user=reviewer, feedback="Mention the refund.")

    submission = Submission.objects.get(pk=async_task.submission_id)
    assert submission.state == SubmissionState.REGENERATING
    assert submission.regenerate_feedback == "Mention the refund."
    assert not submission.is_released
    task = ReviewTask.objects.get(pk=async_task.pk)
    assert (task.state, task.decision) == (ReviewState.DONE, Decision.REGENERATE)
    assert task.label == "rejected"  # the draft sent back was not used


def test_regenerate_through_the_worker_feeds_the_feedback_into_attempt_two(
    worker, fake_model, demo, customer_reply_input
):
    customer_reply_input["complaint"] += " [[lane:blocking]]"
    submission = wait_routed(submit(demo, customer_reply_input).pk)
    first_task = submission.review_tasks.get()
    feedback = f"Offer a replacement, not a refund ({unique_marker()})."

    reviewer = demo.users["reviewer"]
    _claimed(first_task, reviewer)
    services.review_regenerate(task_id=first_task.pk, user=reviewer, feedback=feedback)

    submission = wait_routed(submission.pk, attempt=2)
    assert submission.attempts == 2
    assert submission.state == SubmissionState.ROUTED
    assert list(submission.drafts.values_list("attempt", flat=True)) == [1, 2]
    (request,) = fake_model.calls_for(feedback)
    prompt = next(m["content"] for m in request["messages"] if m["role"] == "user")
    assert "[[lane:blocking]]" in prompt  # the same input, plus the reviewer's feedback
    second_task = submission.review_tasks.get(state=ReviewState.OPEN)
    assert second_task.draft.attempt == 2
    assert ReviewTask.objects.get(pk=first_task.pk).decision == Decision.REGENERATE


# --- the state machine -------------------------------------------------------------------


@pytest.mark.parametrize(
    "start, target",
    [
        (SubmissionState.APPROVED, SubmissionState.ROUTED),
        (SubmissionState.APPROVED, SubmissionState.GENERATING),
        (SubmissionState.REJECTED, SubmissionState.APPROVED),
        (SubmissionState.FAILED, SubmissionState.GENERATING),
        (SubmissionState.SUBMITTED, SubmissionState.APPROVED),
        (SubmissionState.ROUTED, SubmissionState.GENERATING),
    ],
)
def test_illegal_transitions_raise(demo, customer_reply_input, start, target):
    submission = submit(demo, customer_reply_input)
    submission.state = start
    with pytest.raises(IllegalTransition):
        submission.transition_to(target)
    assert submission.state == start


def test_a_closed_review_cannot_be_decided_again(demo, blocking_task):
    reviewer = demo.users["reviewer"]
    _claimed(blocking_task, reviewer)
    services.review_approve(task_id=blocking_task.pk, user=reviewer)
    before = _snapshot(blocking_task)
    with pytest.raises(DomainError, match="already closed"):
        _claimed(blocking_task, reviewer)
    with pytest.raises(DomainError, match="already closed"):
        services.review_reject(task_id=blocking_task.pk, user=reviewer, reason_code="tone", reason_text="Late.")
    assert _snapshot(blocking_task) == before
