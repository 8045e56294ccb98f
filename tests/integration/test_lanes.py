"""The generation pipeline end to end through the real worker: one submission per lane."""
import json

import pytest

from tests.conftest import wait_for
from tests.integration.conftest import wait_routed
from workflows import audit, services
from workflows.models import AuditEvent, Decision, Lane, ReviewState, Submission, SubmissionState
from workflows.routing import sample_draw_for


def _submit(demo, data):
    version = demo.version("customer-reply")
    return services.submission_create(version=version, user=demo.users["submitter"], data=data)


def _routed(pk):
    s = Submission.objects.get(pk=pk)
    return s if s.state not in (SubmissionState.SUBMITTED, SubmissionState.GENERATING) else None


@pytest.mark.parametrize(
    "marker, lane, state, released",
    [
        ("[[lane:auto]]", Lane.AUTO_APPROVE, SubmissionState.APPROVED, True),
        ("[[lane:async]]", Lane.ASYNC_REVIEW, SubmissionState.ROUTED, True),
        ("[[lane:blocking]]", Lane.BLOCKING_REVIEW, SubmissionState.ROUTED, False),
    ],
)
def test_each_lane_through_the_worker(worker, fake_model, demo, customer_reply_input, marker, lane, state, released):
    customer_reply_input["complaint"] += f" {marker}"
    submission = _submit(demo, customer_reply_input)
    done = wait_for(lambda: _routed(submission.pk), message="the worker to route the draft")
    assert done.lane == lane
    assert done.state == state
    assert done.is_released is released
    draft = done.latest_draft
    assert draft.engine == "openai" and draft.model == "gpt-4o-mini"
    assert draft.prompt_tokens > 0 and draft.completion_tokens > 0
    assert draft.score_components["certainty_source"] == "logprobs"
    # The worker asked the real provider API for what scoring needs.
    (request,) = fake_model.calls_for(marker)
    assert request["logprobs"] is True
    assert request["response_format"]["type"] == "json_schema"
    assert request["response_format"]["json_schema"]["schema"]["required"] == ["reply", "tone"]


# --- what each lane releases, and what a reviewer's decision changes ---------------------


def _submission_events(submission, action):
    return AuditEvent.objects.filter(action=action, object_type="submission", object_id=str(submission.pk))


def test_auto_approve_releases_and_approves(worker, fake_model, demo, customer_reply_input):
    customer_reply_input["complaint"] += " [[lane:auto]]"
    submission = wait_routed(_submit(demo, customer_reply_input).pk)

    draft = submission.latest_draft
    assert submission.state == SubmissionState.APPROVED
    assert submission.is_released and submission.final_output == draft.content
    assert _submission_events(submission, "review.auto_approved").get().actor_label == "system"
    released = _submission_events(submission, "output.released").get()
    assert released.payload["output_hash"] == draft.content_hash
    # Only the audit sample of auto-approved drafts gets a (sampled, async) review task.
    sampled = sample_draw_for(submission.pk, 1) < demo.version("customer-reply").spec.routing.audit_sample_rate
    open_tasks = list(submission.review_tasks.filter(state=ReviewState.OPEN))
    assert [(t.lane, t.sampled) for t in open_tasks] == ([(Lane.ASYNC_REVIEW, True)] if sampled else [])


def test_async_review_releases_now_and_a_plain_approval_does_not_release_again(
    worker, fake_model, demo, customer_reply_input
):
    customer_reply_input["complaint"] += " [[lane:async]]"
    submission = wait_routed(_submit(demo, customer_reply_input).pk)
    assert submission.state == SubmissionState.ROUTED
    assert submission.is_released and submission.final_output == submission.latest_draft.content
    task = submission.review_tasks.get(state=ReviewState.OPEN)
    assert task.lane == Lane.ASYNC_REVIEW and not task.sampled
    assert task.due_at is not None

    reviewer = demo.users["reviewer"]
    services.review_claim(task_id=task.pk, user=reviewer)
    services.review_approve(task_id=task.pk, user=reviewer)

    submission.refresh_from_db()
    task.refresh_from_db()
    assert submission.state == SubmissionState.APPROVED
    assert submission.is_released
    assert (task.state, task.decision, task.decided_by) == (ReviewState.DONE, Decision.APPROVE, reviewer)
    assert _submission_events(submission, "output.released").count() == 1


def test_async_review_edit_releases_the_new_text(worker, fake_model, demo, customer_reply_input):
    customer_reply_input["complaint"] += " [[lane:async]]"
    submission = wait_routed(_submit(demo, customer_reply_input).pk)
    task = submission.review_tasks.get(state=ReviewState.OPEN)
    edited = json.dumps({"reply": "Dear Ann, a replacement is on its way.", "tone": "apologetic"})

    reviewer = demo.users["reviewer"]
    services.review_claim(task_id=task.pk, user=reviewer)
    services.review_approve(task_id=task.pk, user=reviewer, edited_output=edited)

    submission.refresh_from_db()
    assert submission.final_output == edited
    releases = list(_submission_events(submission, "output.released").order_by("id"))
    assert [e.actor_label for e in releases] == ["system", "reviewer"]
    assert releases[-1].payload["output_hash"] == audit.content_hash(edited)


def test_blocking_holds_until_approved_with_an_edit(worker, fake_model, demo, customer_reply_input):
    customer_reply_input["complaint"] += " [[lane:blocking]]"
    submission = wait_routed(_submit(demo, customer_reply_input).pk)
    draft = submission.latest_draft
    original = draft.content
    assert submission.state == SubmissionState.ROUTED
    assert not submission.is_released and submission.final_output == ""
    assert not _submission_events(submission, "output.released").exists()
    task = submission.review_tasks.get(state=ReviewState.OPEN)
    assert task.lane == Lane.BLOCKING_REVIEW

    edited = json.dumps({"reply": "Dear Ann, we refund you in full today.", "tone": "apologetic"}, indent=2)
    reviewer = demo.users["reviewer"]
    services.review_claim(task_id=task.pk, user=reviewer)
    services.review_approve(task_id=task.pk, user=reviewer, edited_output=edited)

    submission.refresh_from_db()
    task.refresh_from_db()
    draft.refresh_from_db()
    assert submission.state == SubmissionState.APPROVED
    assert submission.is_released and submission.final_output == edited
    assert draft.content == original  # the model's draft is kept as it was
    assert task.decision == Decision.EDIT and task.edited_output == edited
    # A well-formed unified diff of the indented JSON: only the changed value is a changed
    # line, although the model's draft is one line without a trailing newline.
    old_reply = json.loads(original)["reply"]
    assert task.diff.splitlines() == [
        "--- draft",
        "+++ approved",
        "@@ -1,4 +1,4 @@",
        " {",
        f'-  "reply": "{old_reply}",',
        '+  "reply": "Dear Ann, we refund you in full today.",',
        '   "tone": "apologetic"',
        " }",
    ]
    event = AuditEvent.objects.get(action="review.edited", object_type="reviewtask", object_id=str(task.pk))
    assert event.payload["draft_hash"] == draft.content_hash == audit.content_hash(original)
    assert event.payload["final_hash"] == audit.content_hash(edited)
    assert event.payload["draft_hash"] != event.payload["final_hash"]
    released = _submission_events(submission, "output.released").get()
    assert released.actor_label == "reviewer" and released.payload["output_hash"] == audit.content_hash(edited)
