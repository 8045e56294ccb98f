"""The review page (issue 8, section 2): the structured editor posts plain form fields, the
approval is assembled server-side, previewed as a diff, re-validated against the schema; the
page explains its lane in a sentence and shows the workflow's guidelines. No JavaScript here:
every action works as a plain form post."""
from __future__ import annotations

import json

import pytest

from workflows.models import AuditEvent, Decision, ReviewState, ReviewTask, SubmissionState
from workflows.review_editor import MARKER, REMOVE, name_of

from .html import Page

REPLY, TONE = name_of(("reply",)), name_of(("tone",))


@pytest.fixture
def reviewer(client_for):
    return client_for("reviewer_a")


def _claimed(routed, people, reviewer, **kwargs):
    submission = routed(people["submitter"], lane=kwargs.pop("lane", "blocking_review"), **kwargs)
    task = ReviewTask.objects.get(submission=submission)
    assert reviewer.post(f"/review/{task.pk}/claim/").status_code == 302
    return submission, task


def _fields(**values):
    return {MARKER: "fields", **values}


def _unchanged(task):
    task.refresh_from_db()
    return task.state == ReviewState.OPEN and task.decision == "" and task.submission.state == SubmissionState.ROUTED


def test_the_page_leads_with_the_sentence_guidelines_and_labelled_fields(routed, people, reviewer):
    submission, task = _claimed(routed, people, reviewer)
    page = Page(reviewer.get(f"/review/{task.pk}/"))
    assert page.by_id("why-lane").text.startswith("Held because the model was unsure")
    assert "block_below" not in page.by_id("why-lane").text
    assert page.by_id("thresholds") is not None, "the numbers are there for those who want them"
    guidelines = page.by_id("guidelines")
    assert "A refund may be offered" in guidelines.text
    assert [li.text for li in page.all("li") if guidelines.element in li.ancestors][:1] == [
        "The reply answers the complaint the customer actually made."]
    # The draft as fields: a textarea for the reply, a select for the tone, each labelled.
    reply = page.all("textarea", name=REPLY)
    assert len(reply) == 1 and reply[0].text == json.loads(task.draft.content)["reply"]
    (tone,) = page.all("select", name=TONE)
    assert [o.attrs["value"] for o in page.all("option") if tone.element in o.ancestors] == ["apologetic", "neutral"]
    for control in page.all("input") + page.all("select") + page.all("textarea"):
        if control.attrs.get("type") in ("hidden", "submit"):
            continue
        labelled = any(label.attrs.get("for") == control.attrs.get("id") for label in page.all("label")) or any(
            a.name == "label" for a in control.ancestors)
        assert labelled, f"{control.attrs} has no label"
    # Raw JSON only when asked for: inside a closed <details>.
    raw = page.by_id("raw-edit")
    assert raw is not None and "open" not in raw.attrs
    assert page.by_id("id_edited_output").nearest("raw-edit") is not None
    # Headings in order: one h1, no level skipped.
    levels = [int(n.element.name[1]) for n in page.nodes if n.element.name in ("h1", "h2", "h3", "h4")]
    assert levels[0] == 1 and levels.count(1) == 1
    assert all(b - a <= 1 for a, b in zip(levels, levels[1:])), levels


def test_unchanged_fields_approve_without_an_edit(routed, people, reviewer):
    submission, task = _claimed(routed, people, reviewer)
    draft = json.loads(task.draft.content)
    response = reviewer.post(f"/review/{task.pk}/approve/", _fields(**{REPLY: draft["reply"].replace("\n", "\r\n"), TONE: draft["tone"]}))
    assert response.status_code == 302
    task.refresh_from_db()
    submission.refresh_from_db()
    assert task.decision == Decision.APPROVE and task.diff == ""
    assert submission.final_output == task.draft.content, "the draft's own text is released, not a re-serialisation"


def test_an_edited_field_is_assembled_into_the_json_and_the_diff_named(routed, people, reviewer):
    submission, task = _claimed(routed, people, reviewer)
    response = reviewer.post(f"/review/{task.pk}/approve/", _fields(**{REPLY: "Dear Ann, a new parcel ships today.", TONE: "apologetic"}))
    assert response.status_code == 302
    task.refresh_from_db()
    submission.refresh_from_db()
    assert task.decision == Decision.EDIT
    assert json.loads(submission.final_output) == {"reply": "Dear Ann, a new parcel ships today.", "tone": "apologetic"}
    assert '+  "reply": "Dear Ann, a new parcel ships today."' in task.diff
    queue = reviewer.get(response["Location"]).content.decode()
    assert f"Submission #{submission.pk} approved with your edit (changed: Reply)." in queue


def test_preview_shows_the_diff_and_keeps_the_edit_without_deciding(routed, people, reviewer):
    submission, task = _claimed(routed, people, reviewer)
    events = AuditEvent.objects.count()
    response = reviewer.post(f"/review/{task.pk}/approve/", _fields(**{REPLY: "Changed text.", TONE: "neutral", "preview": "1"}))
    assert response.status_code == 200
    page = Page(response)
    diff = page.by_id("diff-preview")
    assert diff is not None
    assert [n.text for n in page.all("span", class_="diff-add")] == ['+ "reply": "Changed text.",', '+ "tone": "neutral"']  # (whitespace collapsed by the parser)
    assert page.all("textarea", name=REPLY)[0].text == "Changed text."
    assert page.by_id("approve").text.startswith("Approve with these changes")
    assert _unchanged(task) and AuditEvent.objects.count() == events
    same = Page(reviewer.post(f"/review/{task.pk}/approve/", _fields(**{REPLY: json.loads(task.draft.content)["reply"],
                                                                         TONE: "apologetic", "preview": "1"})))
    assert same.by_id("no-changes") is not None


def test_an_unchanged_invalid_draft_is_refused_naming_the_field(routed, people, reviewer):
    content = json.dumps({"reply": "Dear Ann, sorry about the parcel."})  # no tone: schema-invalid
    submission, task = _claimed(routed, people, reviewer, content=content)
    assert "schema_invalid" in task.draft.findings
    page = Page(reviewer.get(f"/review/{task.pk}/"))
    (tone,) = page.all("select", name=TONE)
    assert any("tone" in n.text for n in page.all(class_="finding-note")), "the finding is shown"
    events = AuditEvent.objects.count()
    # The tone stays empty ("— none —"): unchanged, still invalid.
    response = reviewer.post(f"/review/{task.pk}/approve/", _fields(**{REPLY: "Dear Ann, sorry about the parcel.", TONE: ""}))
    assert response.status_code == 422
    page = Page(response)
    (alert,) = page.all("p", role="alert")
    assert "does not match the schema" in alert.text and "Tone (tone): required, but missing." in alert.text
    (tone,) = page.all("select", name=TONE)
    field = tone.nearest("ed-field")
    assert field is not None and "has-error" in dict(field.attributes)["class"]
    assert _unchanged(task) and AuditEvent.objects.count() == events
    # Unchanged and without the editor (a client that sends nothing): refused the same way.
    response = reviewer.post(f"/review/{task.pk}/approve/", {})
    assert response.status_code == 409 and "Tone (tone)" in response.content.decode()
    assert _unchanged(task)
    # Choosing a tone makes it valid: approved as an edit.
    response = reviewer.post(f"/review/{task.pk}/approve/", _fields(**{REPLY: "Dear Ann, sorry about the parcel.", TONE: "apologetic"}))
    assert response.status_code == 302
    task.refresh_from_db()
    assert task.decision == Decision.EDIT and '+  "tone": "apologetic"' in task.diff


def test_an_invalid_edit_is_refused_with_the_field_named_and_the_edit_kept(routed, people, reviewer):
    submission, task = _claimed(routed, people, reviewer)
    response = reviewer.post(f"/review/{task.pk}/approve/", _fields(**{REPLY: "", TONE: "neutral"}))
    assert response.status_code == 422
    page = Page(response)
    (alert,) = page.all("p", role="alert")
    assert "Reply (reply)" in alert.text
    (reply,) = page.all("textarea", name=REPLY)
    assert reply.text == "" and "has-error" in dict(reply.nearest("ed-field").attributes)["class"]
    (tone,) = page.all("select", name=TONE)
    assert [o.attrs["value"] for o in page.all("option") if tone.element in o.ancestors and "selected" in o.attrs] == ["neutral"]
    assert _unchanged(task)


def test_list_items_are_removed_and_added_without_javascript(routed, people, client_for):
    content = json.dumps({"recommendation": "refer", "rationale": "Thin file.", "risks": ["short history"]})
    submission = routed(people["submitter"], slug="underwriting-memo", content=content)
    client = client_for("reviewer_b")
    task = ReviewTask.objects.get(submission=submission)
    assert client.post(f"/review/{task.pk}/claim/").status_code == 302
    risks0, slot = name_of(("risks", 0)), name_of(("risks", 1))
    base = {name_of(("recommendation",)): "refer", name_of(("rationale",)): "Thin file.", risks0: "short history"}
    # Remove the only risk, add another through the empty slot.
    response = client.post(f"/review/{task.pk}/approve/", _fields(**base, **{REMOVE + risks0: "1", slot: "no collateral"}))
    assert response.status_code == 302
    task.refresh_from_db()
    assert json.loads(task.edited_output)["risks"] == ["no collateral"]


def test_bad_editor_posts_are_4xx_with_a_message(routed, people, reviewer):
    submission, task = _claimed(routed, people, reviewer)
    response = reviewer.post(f"/review/{task.pk}/approve/", _fields(**{TONE: "cheerful"}))
    assert response.status_code == 422 and "&#x27;cheerful&#x27; is not one of" in response.content.decode()
    preview = reviewer.post(f"/review/{task.pk}/approve/", _fields(**{REPLY: "x", TONE: "furious", "preview": "1"}))
    assert preview.status_code == 200 and "&#x27;furious&#x27; is not one of" in preview.content.decode()
    assert _unchanged(task)


def test_an_unreadable_value_is_a_field_error_and_nothing_is_lost(routed, people, reviewer):
    # A reply that is not a string does not fit a text field: it is edited as JSON.
    submission, task = _claimed(routed, people, reviewer, content=json.dumps({"reply": 5, "tone": "neutral"}))
    page = Page(reviewer.get(f"/review/{task.pk}/"))
    (reply,) = page.all("textarea", name=REPLY)
    assert reply.text == "5" and "code" in reply.attrs["class"]
    response = reviewer.post(f"/review/{task.pk}/approve/", _fields(**{REPLY: '{"oops', TONE: "apologetic"}))
    assert response.status_code == 422
    page = Page(response)
    (alert,) = page.all("p", role="alert")
    assert "1 field could not be read: Not valid JSON" in alert.text
    (reply,) = page.all("textarea", name=REPLY)
    assert reply.text == '{"oops' and "has-error" in dict(reply.nearest("ed-field").attributes)["class"]
    assert _unchanged(task)
    response = reviewer.post(f"/review/{task.pk}/approve/", _fields(**{REPLY: '"Dear Ann, sorry."', TONE: "apologetic"}))
    assert response.status_code == 302
    task.refresh_from_db()
    assert json.loads(task.edited_output) == {"reply": "Dear Ann, sorry.", "tone": "apologetic"}


def test_a_post_naming_no_field_of_the_draft_approves_it_unchanged(routed, people, reviewer):
    submission, task = _claimed(routed, people, reviewer)
    response = reviewer.post(f"/review/{task.pk}/approve/", {MARKER: "fields", name_of(("extra",)): "{"})
    assert response.status_code == 302, "a field the draft does not have is ignored"
    task.refresh_from_db()
    assert task.decision == Decision.APPROVE


def test_the_editor_needs_the_lease(routed, people, reviewer, client_for):
    submission = routed(people["submitter"])
    task = ReviewTask.objects.get(submission=submission)
    response = reviewer.post(f"/review/{task.pk}/approve/", _fields(**{REPLY: "Hijack", TONE: "neutral"}))
    assert response.status_code == 409
    assert "Claim this review first" in response.content.decode()
    assert _unchanged(task)


def test_earlier_drafts_sit_beside_the_new_one_with_the_timeline(routed, people, reviewer, django_capture_on_commit_callbacks):
    from tests.scripted import scripted_result
    from workflows import services

    submission, task = _claimed(routed, people, reviewer)
    with django_capture_on_commit_callbacks(execute=False):  # no worker: the second draft is recorded here
        services.review_regenerate(task_id=task.pk, user=people["reviewer_a"], feedback="Offer a replacement.")
    claimed = services.generation_claim(submission_id=submission.pk)
    result = scripted_result(submission.workflow_version.spec, submission.data, probability=0.30,
                             content=json.dumps({"reply": "Dear customer, a replacement ships today.", "tone": "apologetic"}))
    services.draft_record(submission_id=submission.pk, attempt=claimed.attempts, result=result, audit_draw=0.999)
    second = ReviewTask.objects.open().get(submission=submission)
    page = Page(reviewer.get(f"/review/{second.pk}/"))
    attempts = page.by_id("attempts")
    headings = [n.text for n in page.all("h3") if attempts.element in n.ancestors]
    assert headings[0].startswith("This draft attempt 2") and headings[1].startswith("Draft of attempt 1")
    assert "a replacement ships today" in attempts.text and "sorry about the parcel" in attempts.text
    timeline = [n.text for n in page.all("code", class_="action")]
    assert "review.regenerate_requested" in timeline and timeline.count("draft.generated") == 2
    assert page.by_id("lane-numbers") is not None and page.by_id("field-certainty") is not None
