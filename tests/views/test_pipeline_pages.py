"""What the pipeline's results look like to the people who read them: a failed draft in plain
words with a way on, the calls and earlier answers behind a draft, the unsure field marked."""
from __future__ import annotations

from tests.commit_hooks import app_hooks
from workflows import services
from workflows.models import AuditEvent, Submission, SubmissionState
from workflows.tasks import generate_draft

from .html import Page

PROVIDER_TEXT = "Error code: 503 - {'error': {'message': '/srv/models/llama.gguf is down'}}"


def _failed(people, demo):
    submission = services.submission_create(
        version=demo.version("customer-reply"), user=people["submitter"],
        data={"customer_name": "Ann Example", "channel": "email", "complaint": "Broken parcel."},
    )
    services.generation_claim(submission_id=submission.pk)
    services.generation_fail(submission_id=submission.pk, attempt=1, kind="provider_unavailable", reason=PROVIDER_TEXT)
    return submission


def test_a_failed_draft_speaks_plainly_to_the_submitter_and_offers_a_retry(people, demo, client_for):
    submission = _failed(people, demo)
    page = Page(client_for("submitter").get(f"/submissions/{submission.pk}/"))
    assert "/srv/models" not in page.html and "Error code" not in page.html
    assert "try again automatically" in page.by_id("failure-message").text
    assert page.by_id("retry") is not None
    # And the other way on: a new request with the same answers, to change before sending.
    assert page.by_id("start-again").attrs["href"] == f"/workflows/customer-reply/new/?from={submission.pk}"
    # Staff see the provider's own words; compliance reads but may not retry.
    reviewer_page = Page(client_for("reviewer_a").get(f"/submissions/{submission.pk}/"))
    assert "/srv/models/llama.gguf" in reviewer_page.by_id("failure-detail").text
    assert reviewer_page.by_id("retry") is not None
    compliance_page = Page(client_for("compliance").get(f"/submissions/{submission.pk}/"))
    assert compliance_page.by_id("retry") is None


def test_retrying_keeps_the_answers_and_sends_the_submission_again(people, demo, client_for,
                                                                   django_capture_on_commit_callbacks):
    submission = _failed(people, demo)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client_for("submitter").post(f"/submissions/{submission.pk}/retry/")
    assert response.status_code == 302
    submission.refresh_from_db()
    assert submission.state == SubmissionState.SUBMITTED and submission.data["complaint"] == "Broken parcel."
    assert len(app_hooks(callbacks)) == 1  # the generation is enqueued once, on commit
    event = AuditEvent.objects.get(action="submission.retried", object_id=str(submission.pk))
    assert event.actor == people["submitter"] and event.payload["failure_kind"] == "provider_unavailable"
    # A second click finds nothing to retry: 409 with a message, nothing changed.
    again = client_for("submitter").post(f"/submissions/{submission.pk}/retry/")
    assert again.status_code == 409 and "Only a failed submission" in again.content.decode()
    assert AuditEvent.objects.filter(action="submission.retried").count() == 1


def test_a_sampled_auto_approval_keeps_polling_until_its_review(people, routed, client_for):
    submission = routed(people["submitter"], lane="auto_approve", sampled=True)
    page = Page(client_for("submitter").get(f"/submissions/{submission.pk}/"))
    assert "hx-get" in page.by_id("submission-status").attrs


def _drafted_by_the_fake(people, demo, *markers):
    submission = services.submission_create(
        version=demo.version("customer-reply"), user=people["submitter"],
        data={"customer_name": "Ann Example", "channel": "email", "complaint": " ".join(["Broken parcel.", *markers])},
    )
    generate_draft.run(submission.pk)
    return Submission.objects.get(pk=submission.pk)


def test_the_review_page_marks_the_unsure_field_and_lists_the_calls(people, demo, client_for, fake_model):
    submission = _drafted_by_the_fake(people, demo, "[[uncertain:reply]] [[lane:auto]] [[invalid-once]]")
    task = submission.review_tasks.get()
    page = Page(client_for("reviewer_a").get(f"/review/{task.pk}/"))
    low_rows = [row.text for row in page.all("tr", class_="low-certainty")]
    assert len(low_rows) == 1 and "Reply" in low_rows[0] and "less sure" in low_rows[0]
    highlighted = [n for n in page.all(class_="low-certainty") if n.element.name != "tr"]
    assert highlighted and all("Tone" not in n.text for n in highlighted), "only the unsure field is marked"
    # The fields read in the schema's order (reply, then tone), not jsonb's shortest-key-first.
    labels = [n.text.split(" less sure")[0] for n in page.all("dt") if n.nearest("draft-fields") is not None]
    assert labels == ["Reply", "Tone"]
    calls = page.by_id("model-calls").text
    assert "draft" in calls and "repair" in calls and "gpt-4o-mini" in calls
    earlier = page.by_id("earlier-attempts").text
    assert "First answer" in earlier and "schema_invalid" in earlier


def test_the_submitter_never_sees_the_calls_or_the_provider_text(people, demo, client_for, fake_model):
    submission = _drafted_by_the_fake(people, demo, "[[lane:async]]")
    page = Page(client_for("submitter").get(f"/submissions/{submission.pk}/"))
    assert page.by_id("model-calls") is None and page.by_id("field-certainty") is None
    assert page.by_id("submission-cost") is None


def test_staff_see_what_the_whole_submission_cost(people, demo, client_for, fake_model):
    submission = _drafted_by_the_fake(people, demo, "[[lane:async]] [[invalid-once]]")
    total = sum(c.cost_usd for c in submission.llm_calls.all())
    assert total > 0
    text = Page(client_for("compliance").get(f"/submissions/{submission.pk}/")).by_id("submission-cost").text
    assert "2 model requests" in text and f"${total:.6f}" in text


def test_two_retries_at_once_send_it_once_and_both_hear_it_is_on_its_way(people, demo, client_for, monkeypatch):
    submission = _failed(people, demo)
    # The reviewer's retry lands between the submitter's check and the submitter's retry.
    services.submission_retry(submission_id=submission.pk, actor=people["reviewer_a"], reason="by hand")
    monkeypatch.setattr(services, "may_retry", lambda submission, user: True)
    response = client_for("submitter").post(f"/submissions/{submission.pk}/retry/", follow=True)
    assert response.status_code == 200 and "already sent again" in response.content.decode()
    assert AuditEvent.objects.filter(action="submission.retried", object_id=str(submission.pk)).count() == 1
