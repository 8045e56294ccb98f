"""A generation never stays stuck: unexpected errors fail it visibly, odd model output is
stored, and submissions whose task was lost are sent again by the periodic sweep."""
from datetime import timedelta

import pytest
from django.utils import timezone
from kombu.exceptions import OperationalError

from tests.integration.conftest import completion, submit, unique_marker, wait_routed
from workflows import dispatch, services, tasks
from workflows.audit import content_hash
from workflows.models import AuditEvent, Lane, Submission, SubmissionState


def test_an_unexpected_error_during_generation_fails_the_submission(demo, customer_reply_input, monkeypatch):
    submission = submit(demo, customer_reply_input)
    monkeypatch.setattr(tasks, "run", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    tasks.generate_draft.run(submission.pk)
    submission.refresh_from_db()
    assert submission.state == SubmissionState.FAILED
    assert submission.failure_reason == "RuntimeError: boom"
    event = AuditEvent.objects.get(action="draft.failed", object_id=str(submission.pk))
    assert event.payload["error_hash"] == content_hash("RuntimeError: boom")
    assert event.payload["error_chars"] == len("RuntimeError: boom") and "error" not in event.payload


@pytest.mark.parametrize(
    "content",
    ['{"reply": "x", "tone": "neutral", "n": 1e400}', '{"reply": "x", "tone": "neutral", "n": NaN}'],
)
def test_non_finite_numbers_are_a_schema_finding_not_a_crash(demo, customer_reply_input, content):
    submission = submit(demo, customer_reply_input)
    claimed = services.generation_claim(submission_id=submission.pk)
    draft = services.draft_record(submission_id=submission.pk, attempt=claimed.attempts,
                                  result=completion("auto", content=content))
    assert draft.lane == Lane.BLOCKING_REVIEW
    assert draft.findings == ["schema_invalid"] and draft.parsed is None


def test_a_nul_byte_from_the_model_is_stored_replaced(demo, customer_reply_input):
    submission = submit(demo, customer_reply_input)
    claimed = services.generation_claim(submission_id=submission.pk)
    # As JSON writes it (\u0000) and as a raw byte in the text.
    content = '{"reply": "raw\x00 and escaped \\u0000", "tone": "neutral"}'
    draft = services.draft_record(submission_id=submission.pk, attempt=claimed.attempts,
                                  result=completion("auto", content=content))
    draft.refresh_from_db()
    assert "\x00" not in draft.content
    assert draft.parsed["reply"] == "raw\ufffd and escaped \ufffd"


def test_a_broker_outage_at_commit_loses_nothing_and_the_sweep_sends_it(
    demo, customer_reply_input, monkeypatch, django_capture_on_commit_callbacks
):
    def broker_down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(dispatch, "send_generation", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        submission = submit(demo, customer_reply_input)
    assert Submission.objects.get(pk=submission.pk).state == SubmissionState.SUBMITTED

    sent = []
    monkeypatch.setattr(dispatch, "send_generation", sent.append)
    assert tasks.requeue_stalled_generations.run() == 0  # still within the grace period
    Submission.objects.filter(pk=submission.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
    assert tasks.requeue_stalled_generations.run() == 1
    assert sent == [submission.pk]
    # Re-sent once per grace period, not every minute while the worker is busy.
    assert tasks.requeue_stalled_generations.run() == 0
    assert sent == [submission.pk]


def test_the_sweep_gets_a_lost_task_generated_by_the_real_worker(worker, fake_model, demo, customer_reply_input, monkeypatch):
    marker = unique_marker()
    customer_reply_input["complaint"] += f" {marker} [[lane:async]]"
    monkeypatch.setattr(dispatch, "send_generation", lambda pk: None)  # the task is lost
    submission = submit(demo, customer_reply_input)
    assert Submission.objects.get(pk=submission.pk).state == SubmissionState.SUBMITTED
    Submission.objects.filter(pk=submission.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
    monkeypatch.undo()
    assert tasks.requeue_stalled_generations.run() == 1
    routed = wait_routed(submission.pk)
    assert routed.lane == Lane.ASYNC_REVIEW and len(fake_model.calls_for(marker)) == 1


def test_a_stale_generating_claim_is_swept(demo, customer_reply_input, settings, monkeypatch):
    submission = submit(demo, customer_reply_input)
    services.generation_claim(submission_id=submission.pk)
    sent = []
    monkeypatch.setattr(dispatch, "send_generation", sent.append)
    assert tasks.requeue_stalled_generations.run() == 0
    Submission.objects.filter(pk=submission.pk).update(
        generation_started_at=timezone.now() - timedelta(seconds=settings.REVIEWDESK_GENERATION_STALE_SECONDS + 1)
    )
    assert tasks.requeue_stalled_generations.run() == 1 and sent == [submission.pk]
