"""Every approval re-validates the final text against the workflow's schema (issue 8, section 2):
an unchanged draft that does not match is refused like a bad edit, naming the field, and a
refusal changes nothing. services.check_final_output, called from services.review_approve."""
import json

import pytest

from tests.integration.conftest import drafted, submit
from workflows import services
from workflows.models import AuditEvent, Decision, DomainError, ReviewTask, Submission


def _snapshot(task):
    task = ReviewTask.objects.get(pk=task.pk)
    submission = Submission.objects.get(pk=task.submission_id)
    return (task.state, task.decision, task.edited_output, task.diff, submission.state, submission.final_output,
            submission.released_at, AuditEvent.objects.count())


@pytest.fixture
def claim(demo):
    def make(content):
        draft = drafted(submit(demo, {"customer_name": "Ann Example", "channel": "email",
                                      "complaint": "The parcel arrived broken."}), lane="blocking", content=content)
        task = draft.review_tasks.get()
        services.review_claim(task_id=task.pk, user=demo.users["reviewer"])
        return task

    return make


def test_an_unchanged_invalid_draft_is_refused_naming_the_field(demo, claim):
    task = claim(json.dumps({"reply": "Dear Ann, sorry."}))
    assert "schema_invalid" in task.draft.findings
    before = _snapshot(task)
    with pytest.raises(DomainError, match=r"The draft does not match the schema: Tone \(tone\): required, but missing\."):
        services.review_approve(task_id=task.pk, user=demo.users["reviewer"])
    # Sending the same text back is no edit either: refused the same way.
    with pytest.raises(DomainError, match=r"Tone \(tone\)"):
        services.review_approve(task_id=task.pk, user=demo.users["reviewer"], edited_output=task.draft.content)
    assert _snapshot(task) == before


def test_an_unchanged_draft_that_is_not_json_is_refused(demo, claim):
    task = claim("Dear Ann, sorry for the trouble.")
    before = _snapshot(task)
    with pytest.raises(DomainError, match="not JSON"):
        services.review_approve(task_id=task.pk, user=demo.users["reviewer"])
    assert _snapshot(task) == before


@pytest.mark.parametrize(
    "edited, field",
    [
        ({"reply": "Dear Ann", "tone": "furious"}, "Tone (tone)"),
        ({"reply": "", "tone": "neutral"}, "Reply (reply)"),
        ({"tone": "neutral"}, "Reply (reply): required, but missing."),
    ],
)
def test_an_invalid_edit_is_refused_with_the_field_named(demo, claim, edited, field):
    task = claim(json.dumps({"reply": "Dear Ann, sorry.", "tone": "neutral"}))
    before = _snapshot(task)
    with pytest.raises(DomainError) as refused:
        services.review_approve(task_id=task.pk, user=demo.users["reviewer"], edited_output=json.dumps(edited))
    assert "The edited output does not match the schema" in str(refused.value) and field in str(refused.value)
    assert _snapshot(task) == before


def test_a_valid_edit_of_an_invalid_draft_is_accepted_with_its_diff(demo, claim):
    task = claim(json.dumps({"reply": "Dear Ann, sorry."}))
    fixed = json.dumps({"reply": "Dear Ann, sorry.", "tone": "apologetic"})
    task = services.review_approve(task_id=task.pk, user=demo.users["reviewer"], edited_output=fixed)
    assert task.decision == Decision.EDIT
    assert '+  "tone": "apologetic"' in task.diff and '-  "reply"' in task.diff  # the comma moved
    assert Submission.objects.get(pk=task.submission_id).final_output == fixed


def test_a_valid_unchanged_draft_is_approved_as_it_is(demo, claim):
    content = json.dumps({"reply": "Dear Ann, sorry.", "tone": "neutral"})
    task = claim(content)
    task = services.review_approve(task_id=task.pk, user=demo.users["reviewer"])
    assert (task.decision, task.diff) == (Decision.APPROVE, "")
    assert Submission.objects.get(pk=task.submission_id).final_output == content
