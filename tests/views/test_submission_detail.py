"""What the submitter sees of their request while it is drafted, reviewed and released."""
from __future__ import annotations

import json

from django.db.models import Q
from django.utils import timezone

from workflows import audit, services
from workflows.models import AuditEvent, ReviewTask

from .html import Page

SECRET = "DRAFT-ONLY-WORDING-7f3a"


def _draft(text):
    return json.dumps({"reply": text, "tone": "neutral"})


def test_blocking_draft_is_hidden_from_the_submitter_until_approved(people, routed, client_for):
    submission = routed(people["submitter"], lane="blocking_review", content=_draft(SECRET))
    url = f"/submissions/{submission.pk}/"
    owner = client_for("submitter")

    page = Page(owner.get(url))
    assert page.by_id("submission-state").text == "Waiting for a reviewer"
    assert SECRET not in page.html
    assert page.by_id("released-output") is None
    # Plain words with the due time of the review (ReviewTask.due_at), no lane or score.
    due = timezone.localtime(ReviewTask.objects.get(submission=submission).due_at)
    assert page.by_id("status-detail").text == (
        f"A colleague will review this before it is released, by {due.strftime('%d %b %Y, %H:%M')}.")
    assert "Blocking review" not in page.html and "score" not in page.html.lower()
    # The draft is there to be seen by the people who may see it, so its absence above is real.
    assert SECRET in client_for("reviewer_a").get(url).content.decode()
    assert SECRET in client_for("compliance").get(url).content.decode()

    task = ReviewTask.objects.get(submission=submission)
    reviewer = people["reviewer_a"]
    services.review_claim(task_id=task.pk, user=reviewer)
    services.review_approve(task_id=task.pk, user=reviewer)

    page = Page(owner.get(url))
    assert page.by_id("submission-state").text == "Approved"
    assert SECRET in page.by_id("released-output").text
    assert "final and ready to use" in page.by_id("status-detail").text


def test_async_draft_is_released_to_the_submitter_at_once(people, routed, client_for):
    submission = routed(people["submitter"], lane="async_review", content=_draft(SECRET))
    page = Page(client_for("submitter").get(f"/submissions/{submission.pk}/"))
    assert page.by_id("submission-state").text == "Released, a reviewer will check it later"
    assert SECRET in page.by_id("released-output").text
    assert "You can use the text below now" in page.by_id("status-detail").text


def test_pending_submission_polls_and_htmx_gets_only_the_status_partial(people, demo, client_for, customer_reply_input):
    submission = services.submission_create(
        version=demo.version("customer-reply"), user=people["submitter"], data=customer_reply_input
    )
    url = f"/submissions/{submission.pk}/"
    client = client_for("submitter")
    full = Page(client.get(url))
    assert full.by_id("submission-state").text == "Waiting to be drafted"
    assert full.by_id("submission-status").attrs.get("hx-get") == url, "a pending page keeps polling"
    partial = client.get(url, headers={"HX-Request": "true"})
    assert partial.status_code == 200
    body = partial.content.decode()
    assert "<html" not in body and body.lstrip().startswith('<div id="submission-status"')
    assert "<h2>Your request</h2>" in full.html and "<h2>Your request</h2>" not in body, \
        "the request card is outside the partial"
    assert Page(partial).by_id("submission-state").text == "Waiting to be drafted"


def test_polling_goes_on_until_the_submission_is_final(people, routed, client_for):
    # A released async draft is not final: the reviewer may still retract it.
    submission = routed(people["submitter"], lane="async_review")
    status = Page(client_for("submitter").get(f"/submissions/{submission.pk}/")).by_id("submission-status")
    assert status.attrs["hx-get"] == f"/submissions/{submission.pk}/"
    assert status.attrs["hx-trigger"] == "every 15s"


def test_finished_submission_stops_polling(people, routed, client_for):
    submission = routed(people["submitter"], lane="auto_approve")
    page = Page(client_for("submitter").get(f"/submissions/{submission.pk}/"))
    assert "hx-get" not in page.by_id("submission-status").attrs


def test_a_retracted_output_is_no_longer_shown(people, routed, client_for):
    submission = routed(people["submitter"], lane="async_review")
    client = client_for("submitter")
    assert Page(client.get(f"/submissions/{submission.pk}/")).by_id("released-output") is not None
    task = ReviewTask.objects.get(submission=submission)
    services.review_claim(task_id=task.pk, user=people["reviewer_a"])
    services.review_reject(task_id=task.pk, user=people["reviewer_a"], reason_code="tone", reason_text="Too curt.")
    page = Page(client.get(f"/submissions/{submission.pk}/"))
    assert page.by_id("released-output") is None
    # It says plainly that the text released earlier must not be used, and offers the way on.
    assert page.by_id("submission-state").text == "Withdrawn: do not use"
    notice = page.by_id("withdrawn-notice")
    assert "the text released earlier must not be used" in notice.text
    assert "Do not send it, copy it or rely on it" in notice.text
    assert page.by_id("start-again").attrs["href"] == f"/workflows/customer-reply/new/?from={submission.pk}"
    # Reviewers and compliance see the fact, with its time.
    reviewer = Page(client_for("reviewer_a").get(f"/submissions/{submission.pk}/"))
    assert [n.text.split()[0] for n in reviewer.all("span", class_="badge-retracted")] == ["Retracted"]


def test_audit_timeline_lists_the_runs_events_in_order(people, routed, client_for):
    submission = routed(people["submitter"], lane="blocking_review")
    routed(people["other_submitter"], lane="async_review")  # its events must not show up
    task = ReviewTask.objects.get(submission=submission)
    reviewer = people["reviewer_a"]
    services.review_claim(task_id=task.pk, user=reviewer)
    services.review_approve(task_id=task.pk, user=reviewer, edited_output=_draft("Edited."))
    audit.chain_now()  # the hashes exist, so the check below can look for them

    # The submitter reads what happened in sentences: no audit codes, no hashes.
    plain = Page(client_for("submitter").get(f"/submissions/{submission.pk}/"))
    assert plain.all("li", class_="event") == []
    history = [n.text for n in plain.all("li") if dict(n.ancestors[-1].attributes).get("id") == "plain-history"]
    sentences = [" ".join(h.split()[3:]) for h in history]
    assert sentences[0] == "You sent the request." and sentences[-1] == "The text was released to you."
    assert "A reviewer corrected and approved the text." in sentences
    assert "review.edited" not in plain.html and "output.released" not in plain.html
    assert not any(e.hash[:10] in plain.html for e in AuditEvent.objects.all())

    # Reviewers (and compliance) get the audit trail itself.
    page = Page(client_for("reviewer_a").get(f"/submissions/{submission.pk}/"))
    shown = [(n.attrs["data-action"], n.element) for n in page.all("li", class_="event")]
    # Everything recorded about this run, straight from the table, oldest first.
    recorded = list(
        AuditEvent.objects.filter(
            Q(object_type="submission", object_id=str(submission.pk))
            | Q(object_type="draft", object_id__in=[str(d.pk) for d in submission.drafts.all()])
            | Q(object_type="reviewtask", object_id=str(task.pk))
        ).order_by("id").values_list("action", "actor_label")
    )
    assert [action for action, _ in shown] == [action for action, _ in recorded]
    actors = [_child_text(li, "actor") for _, li in shown]
    assert actors == [actor for _, actor in recorded]
    # The milestones of this run, in the order they happened (other events may sit between).
    milestones = ["submission.created", "draft.generated", "draft.routed", "review.claimed", "review.edited", "output.released"]
    actions = [action for action, _ in shown]
    positions = [actions.index(m) for m in milestones]
    assert positions == sorted(positions), actions
    assert [a for a, _ in recorded if a.startswith("review.")] == ["review.claimed", "review.edited"]
    assert actions[-1] == "output.released"


def _child_text(element, css_class):
    (child,) = [
        c for c in element.children
        if not isinstance(c, str) and css_class in (dict(c.attributes).get("class") or "").split()
    ]
    return " ".join(child.children)


def test_review_decisions_show_the_edit_diff_to_reviewers_but_not_to_the_submitter(people, routed, client_for):
    submission = routed(people["submitter"])
    task = ReviewTask.objects.get(submission=submission)
    reviewer = people["reviewer_a"]
    services.review_claim(task_id=task.pk, user=reviewer)
    draft = json.loads(task.draft.content)
    services.review_approve(task_id=task.pk, user=reviewer, edited_output=json.dumps({**draft, "tone": "neutral"}))

    seen_by_reviewer = client_for("reviewer_a").get(f"/submissions/{submission.pk}/").content.decode()
    assert 'id="decisions"' in seen_by_reviewer and "Approve with edit" in seen_by_reviewer
    assert 'class="diff-add"' in seen_by_reviewer and "neutral" in seen_by_reviewer

    seen_by_submitter = client_for("submitter").get(f"/submissions/{submission.pk}/").content.decode()
    assert "Approve with edit" in seen_by_submitter
    assert 'class="diff-add"' not in seen_by_submitter


def test_a_released_json_output_reads_as_labelled_fields(people, routed, client_for):
    submission = routed(people["submitter"], lane="auto_approve")
    body = client_for("submitter").get(f"/submissions/{submission.pk}/").content.decode()
    assert '<dl class="output-fields">' in body
    assert "<dt>Reply</dt>" in body and "<dt>Tone</dt>" in body
    # Raw JSON is for reviewers and compliance, not for the business user.
    assert "<summary>As JSON</summary>" not in body
    assert "<summary>As JSON</summary>" in client_for("reviewer_a").get(f"/submissions/{submission.pk}/").content.decode()


def test_the_submitter_sees_a_decision_but_not_the_reviewers_words_about_the_draft(people, routed, client_for):
    submission = routed(people["submitter"])
    task = ReviewTask.objects.get(submission=submission)
    services.review_claim(task_id=task.pk, user=people["reviewer_a"])
    services.review_regenerate(task_id=task.pk, user=people["reviewer_a"], feedback="The draft says SECRET-QUOTE.")
    as_submitter = client_for("submitter").get(f"/submissions/{submission.pk}/").content.decode()
    assert "Regenerate" in as_submitter and "SECRET-QUOTE" not in as_submitter
    as_reviewer = client_for("reviewer_a").get(f"/submissions/{submission.pk}/").content.decode()
    assert "SECRET-QUOTE" in as_reviewer


# --- issue 8: the way on, and the facts for those who may see them ----------------------------


def test_a_rejected_request_offers_a_new_request_prefilled_and_no_retry(people, routed, client_for):
    submission = routed(people["submitter"], lane="blocking_review", content=_draft(SECRET))
    task = ReviewTask.objects.get(submission=submission)
    services.review_claim(task_id=task.pk, user=people["reviewer_a"])
    services.review_reject(task_id=task.pk, user=people["reviewer_a"], reason_code="tone", reason_text="Too curt.")
    page = Page(client_for("submitter").get(f"/submissions/{submission.pk}/"))
    assert page.by_id("submission-state").text == "Not approved"
    assert page.by_id("retry") is None, "only a failed request can be tried again"
    assert page.by_id("start-again").attrs["href"] == f"/workflows/customer-reply/new/?from={submission.pk}"
    assert SECRET not in page.html
    # A reviewer may open the page but cannot start the submitter's request again.
    assert Page(client_for("reviewer_a").get(f"/submissions/{submission.pk}/")).by_id("start-again") is None


def test_a_submitter_never_reads_codes_scores_or_lanes_but_reviewers_get_the_facts(people, routed, client_for):
    submission = routed(people["submitter"], lane="async_review")
    url = f"/submissions/{submission.pk}/"
    owner = client_for("submitter").get(url).content.decode()
    for technical in ("async_review", "Async review", "draft.routed", "auto_approve_at", "block_below", "score",
                      "sha256", "Awaiting review", "technical-state", "audit-timeline"):
        assert technical not in owner, technical
    reviewer = Page(client_for("reviewer_a").get(url))
    assert reviewer.by_id("technical-state").text.startswith("State Awaiting review")
    assert reviewer.by_id("audit-timeline") is not None
    compliance = Page(client_for("compliance").get(url))
    assert compliance.by_id("technical-state") is not None and compliance.by_id("audit-timeline") is not None


def test_the_submission_list_speaks_plainly_to_a_submitter(people, routed, client_for):
    routed(people["submitter"], lane="blocking_review")
    mine = Page(client_for("submitter").get("/submissions/"))
    assert [n.text for n in mine.all("span", class_="plain-state")] == ["Waiting for a reviewer"]
    assert mine.all("span", class_="lane") == [] and "Blocking review" not in mine.html
    theirs = Page(client_for("reviewer_a").get("/submissions/"))
    assert [n.text for n in theirs.all("span", class_="lane")] == ["Blocking review"]
    home = Page(client_for("submitter").get("/"))
    assert [n.text for n in home.all("span", class_="plain-state")] == ["Waiting for a reviewer"]
