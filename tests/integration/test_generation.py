"""Generation: duplicate delivery, stale claims, invalid output and the fallback model."""
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from tests.integration.conftest import completion, submit, unique_marker, wait_routed, wait_task_finished
from workflows import services
from workflows.audit import content_hash
from workflows.models import AuditEvent, Draft, Lane, LLMCall, Submission, SubmissionState
from workflows.tasks import generate_draft


def _events(submission, action):
    draft_ids = [str(pk) for pk in submission.drafts.values_list("pk", flat=True)]
    if action.startswith("draft.generated"):
        return AuditEvent.objects.filter(action=action, object_type="draft", object_id__in=draft_ids)
    return AuditEvent.objects.filter(action=action, object_type="submission", object_id=str(submission.pk))


# --- duplicate delivery ------------------------------------------------------------------


def test_task_run_twice_in_process_makes_one_draft(fake_model, demo, customer_reply_input):
    marker = unique_marker()
    customer_reply_input["complaint"] += f" {marker}"
    submission = submit(demo, customer_reply_input)

    generate_draft.run(submission.pk)
    generate_draft.run(submission.pk)  # a redelivery: must find nothing to do

    submission.refresh_from_db()
    assert submission.state == SubmissionState.APPROVED
    assert submission.attempts == 1
    assert Draft.objects.filter(submission=submission).count() == 1
    assert LLMCall.objects.filter(submission=submission).count() == 1
    assert _events(submission, "draft.generated").count() == 1
    assert len(fake_model.calls_for(marker)) == 1


def test_task_delivered_three_times_through_the_worker_makes_one_draft(worker, fake_model, demo, customer_reply_input):
    marker = unique_marker()
    customer_reply_input["complaint"] += f" {marker} [[lane:blocking]]"
    submission = submit(demo, customer_reply_input)  # enqueues once on commit
    duplicates = [generate_draft.delay(submission.pk) for _ in range(2)]

    wait_routed(submission.pk)
    for result in duplicates:
        wait_task_finished(worker, result.id)

    submission.refresh_from_db()
    assert submission.state == SubmissionState.ROUTED
    assert submission.attempts == 1
    assert Draft.objects.filter(submission=submission).count() == 1
    assert submission.review_tasks.count() == 1
    assert _events(submission, "draft.generated").count() == 1
    assert _events(submission, "draft.routed").count() == 1
    assert len(fake_model.calls_for(marker)) == 1


# --- stale claims ------------------------------------------------------------------------


def _stuck_generating(submission, *, seconds_ago: float):
    claimed = services.generation_claim(submission_id=submission.pk)
    assert claimed.attempts == 1
    Submission.objects.filter(pk=submission.pk).update(
        generation_started_at=timezone.now() - timedelta(seconds=seconds_ago)
    )


def test_a_stale_generation_is_reclaimed_as_attempt_two(demo, customer_reply_input):
    submission = submit(demo, customer_reply_input)
    _stuck_generating(submission, seconds_ago=settings.REVIEWDESK_GENERATION_STALE_SECONDS + 5)

    reclaimed = services.generation_claim(submission_id=submission.pk)

    assert reclaimed is not None
    assert reclaimed.state == SubmissionState.GENERATING
    assert reclaimed.attempts == 2
    assert timezone.now() - reclaimed.generation_started_at < timedelta(seconds=5)
    # The worker that was given up on may still finish; its attempt-1 draft is dropped.
    assert services.draft_record(submission_id=submission.pk, attempt=1, result=completion("auto")) is None
    assert not Draft.objects.filter(submission=submission).exists()
    assert not AuditEvent.objects.filter(action="draft.generated").exists()
    draft = services.draft_record(submission_id=submission.pk, attempt=2, result=completion("auto"))
    assert draft.attempt == 2


def test_a_late_failure_of_a_given_up_attempt_does_not_fail_the_new_one(demo, customer_reply_input):
    submission = submit(demo, customer_reply_input)
    _stuck_generating(submission, seconds_ago=settings.REVIEWDESK_GENERATION_STALE_SECONDS + 5)
    services.generation_claim(submission_id=submission.pk)

    services.generation_fail(submission_id=submission.pk, attempt=1, kind="internal", reason="late timeout of attempt 1")

    submission.refresh_from_db()
    assert (submission.state, submission.attempts, submission.failure_reason) == (SubmissionState.GENERATING, 2, "")
    assert not AuditEvent.objects.filter(action="draft.failed").exists()


def test_a_fresh_generation_is_not_reclaimed(demo, customer_reply_input):
    submission = submit(demo, customer_reply_input)
    _stuck_generating(submission, seconds_ago=settings.REVIEWDESK_GENERATION_STALE_SECONDS / 2)

    assert services.generation_claim(submission_id=submission.pk) is None
    submission.refresh_from_db()
    assert submission.attempts == 1
    assert submission.state == SubmissionState.GENERATING


# --- output validation and fallback ------------------------------------------------------


def test_schema_invalid_output_is_blocked_despite_high_certainty(worker, fake_model, demo, customer_reply_input):
    customer_reply_input["complaint"] += " [[invalid]] [[lane:auto]]"
    submission = wait_routed(submit(demo, customer_reply_input).pk)

    draft = submission.latest_draft
    assert submission.lane == Lane.BLOCKING_REVIEW
    assert submission.state == SubmissionState.ROUTED
    assert not submission.is_released
    assert "schema_invalid" in draft.findings
    # The model was sure of itself; the validator overrules it.
    assert draft.score_components["certainty"] > 0.9
    assert draft.score < 0.9
    assert "tone" in draft.score_components["validator_details"]["schema_invalid"]
    assert submission.review_tasks.get().lane == Lane.BLOCKING_REVIEW


def test_fallback_model_drafts_when_the_primary_is_down(worker, fake_model, demo, customer_reply_input):
    marker = unique_marker()
    customer_reply_input["complaint"] += f" {marker} [[down:gpt-4o-mini]]"
    submission = wait_routed(submit(demo, customer_reply_input).pk)

    draft = submission.latest_draft
    assert draft.model == "gpt-4o"
    assert [call["model"] for call in fake_model.calls_for(marker)] == ["gpt-4o-mini", "gpt-4o"]
    calls = {call.model: call for call in LLMCall.objects.filter(submission=submission)}
    assert set(calls) == {"gpt-4o-mini", "gpt-4o"}
    assert calls["gpt-4o-mini"].ok is False and "503" in calls["gpt-4o-mini"].error
    assert calls["gpt-4o"].ok is True and calls["gpt-4o"].completion_tokens == draft.completion_tokens
    event = _events(submission, "draft.generated").get()
    assert event.payload["model"] == "gpt-4o"
    (failed,) = event.payload["failed_models"]
    assert failed.startswith("gpt-4o-mini:")


def test_all_models_down_fails_the_submission(worker, fake_model, demo, customer_reply_input):
    marker = unique_marker()
    customer_reply_input["complaint"] += f" {marker} [[down:gpt-4o-mini]] [[down:gpt-4o]]"
    submission = wait_routed(submit(demo, customer_reply_input).pk)

    assert submission.state == SubmissionState.FAILED
    assert "gpt-4o-mini" in submission.failure_reason and "gpt-4o:" in submission.failure_reason
    assert submission.generation_started_at is None
    assert not submission.drafts.exists()
    assert not submission.is_released
    assert len(fake_model.calls_for(marker)) == 2
    assert LLMCall.objects.filter(submission=submission, ok=True).count() == 0
    failed = LLMCall.objects.filter(submission=submission, ok=False).order_by("id")
    assert [(c.model, "503" in c.error) for c in failed] == [("gpt-4o-mini", True), ("gpt-4o", True)]
    event = _events(submission, "draft.failed").get()
    assert event.actor_label == "system"
    # Provider text stays on the row (staff only); the chain carries its hash.
    assert event.payload["error_hash"] == content_hash(submission.failure_reason) and "error" not in event.payload
