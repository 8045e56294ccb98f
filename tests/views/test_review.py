"""The reviewer's pages: queue, claim, and the three decisions, each a POST."""
from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.commit_hooks import app_hooks
from workflows.models import AuditEvent, Decision, ReviewState, ReviewTask, SubmissionState

from .html import Page

EDITED = json.dumps({"reply": "Dear Ann, we are sorry; a replacement is on its way.", "tone": "apologetic"})


@pytest.fixture
def blocking(people, routed):
    submission = routed(people["submitter"], lane="blocking_review")
    return submission, ReviewTask.objects.get(submission=submission)


@pytest.fixture
def reviewer(client_for):
    return client_for("reviewer_a")


def _state(submission, task):
    submission.refresh_from_db()
    task.refresh_from_db()
    return {
        "submission": (submission.state, submission.released_at, submission.final_output),
        "task": (task.state, task.claimed_by_id, task.decision, task.reason_code, task.reason_text),
        "review_events": list(AuditEvent.objects.filter(action__startswith="review.").values_list("action", flat=True)),
    }


def test_claim_then_approve_with_edit_releases_the_edited_text(blocking, reviewer, people):
    submission, task = blocking
    claim = reviewer.post(f"/review/{task.pk}/claim/")
    assert claim.status_code == 302 and claim["Location"] == f"/review/{task.pk}/"
    detail = Page(reviewer.get(f"/review/{task.pk}/"))
    assert detail.by_id("approve") is not None, "the lease holder gets the decision forms"
    response = reviewer.post(f"/review/{task.pk}/approve/", {"edited_output": EDITED})
    assert response.status_code == 302
    assert response["Location"] == "/review/?lane=blocking_review"
    submission.refresh_from_db()
    task.refresh_from_db()
    assert submission.state == SubmissionState.APPROVED
    assert submission.is_released and submission.final_output == EDITED
    assert (task.state, task.decision, task.decided_by) == (ReviewState.DONE, Decision.EDIT, people["reviewer_a"])
    assert "+" in task.diff and "replacement" in task.diff
    queue = reviewer.get(response["Location"])
    assert f"Submission #{submission.pk} approved with your edit." in queue.content.decode()


def test_approve_without_claim_is_409_and_changes_nothing(blocking, reviewer):
    submission, task = blocking
    before = _state(submission, task)
    response = reviewer.post(f"/review/{task.pk}/approve/", {"edited_output": EDITED})
    assert response.status_code == 409
    error = Page(response).all("p", role="alert")
    assert [e.text for e in error] == ["Claim this review first; your lease may have expired."]
    assert _state(submission, task) == before


def test_approve_while_someone_else_holds_the_lease_is_409(blocking, client_for, people, make_user):
    submission, task = blocking
    assert client_for("reviewer_a").post(f"/review/{task.pk}/claim/").status_code == 302
    colleague = client_for(make_user("reviewer-a2", "reviewer", "support-reviewers"))
    before = _state(submission, task)
    response = colleague.post(f"/review/{task.pk}/claim/")
    assert response.status_code == 409
    assert "This review is claimed by reviewer-a" in response.content.decode()
    assert colleague.post(f"/review/{task.pk}/approve/", {"edited_output": ""}).status_code == 409
    assert _state(submission, task) == before


def test_reject_without_reason_is_422_with_field_errors(blocking, reviewer):
    submission, task = blocking
    reviewer.post(f"/review/{task.pk}/claim/")
    before = _state(submission, task)
    response = reviewer.post(f"/review/{task.pk}/reject/", {"reason_code": "", "reason_text": ""})
    assert response.status_code == 422
    page = Page(response)
    for field in ("reason_code", "reason_text"):
        error = page.by_id(f"id_{field}_error")
        assert error is not None and error.text == "This field is required."
        assert error.nearest("field") is page.by_id(f"id_{field}").nearest("field")
    assert _state(submission, task) == before


def test_reject_with_reason_closes_the_review(blocking, reviewer):
    submission, task = blocking
    reviewer.post(f"/review/{task.pk}/claim/")
    response = reviewer.post(f"/review/{task.pk}/reject/", {"reason_code": "tone", "reason_text": "Too curt."})
    assert response.status_code == 302
    submission.refresh_from_db()
    task.refresh_from_db()
    assert submission.state == SubmissionState.REJECTED and not submission.is_released
    assert (task.decision, task.reason_code, task.reason_text) == (Decision.REJECT, "tone", "Too curt.")


def test_regenerate_without_feedback_is_422(blocking, reviewer):
    submission, task = blocking
    reviewer.post(f"/review/{task.pk}/claim/")
    before = _state(submission, task)
    response = reviewer.post(f"/review/{task.pk}/regenerate/", {"feedback": "   "})
    assert response.status_code == 422
    error = Page(response).by_id("id_feedback_error")
    assert error is not None and error.text == "This field is required."
    assert _state(submission, task) == before


def test_regenerate_with_feedback_requeues_on_commit(blocking, reviewer, django_capture_on_commit_callbacks):
    submission, task = blocking
    reviewer.post(f"/review/{task.pk}/claim/")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = reviewer.post(f"/review/{task.pk}/regenerate/", {"feedback": "Mention the refund."})
    assert response.status_code == 302
    submission.refresh_from_db()
    assert submission.state == SubmissionState.REGENERATING
    assert submission.regenerate_feedback == "Mention the refund."
    assert [cb.args for cb in app_hooks(callbacks)] == [(submission.pk,)]


@pytest.mark.parametrize("action", ["claim", "approve", "reject", "regenerate"])
def test_decision_urls_refuse_get(blocking, reviewer, action):
    submission, task = blocking
    before = _state(submission, task)
    assert reviewer.get(f"/review/{task.pk}/{action}/").status_code == 405
    assert _state(submission, task) == before


def test_queue_shows_counts_per_lane_and_only_the_lane_asked_for(people, routed, reviewer):
    blocking = [routed(people["submitter"], lane="blocking_review") for _ in range(2)]
    async_ = routed(people["submitter"], lane="async_review")
    task_of = {s.pk: ReviewTask.objects.get(submission=s).pk for s in [*blocking, async_]}

    def listed(page):
        return {int(n.attrs["href"].strip("/").split("/")[-1]) for n in page.all("a", class_="button small")}

    async_page = Page(reviewer.get("/review/?lane=async_review"))
    counts = {n.attrs["data-lane"]: n.text for n in async_page.all("span", class_="count")}
    assert counts == {"blocking_review": "2", "async_review": "1", "audit_sample": "0"}
    assert listed(async_page) == {task_of[async_.pk]}
    assert [n.text for n in async_page.all("a", class_="tab active")][0].startswith("Async review")

    blocking_page = Page(reviewer.get("/review/?lane=blocking_review"))
    assert listed(blocking_page) == {task_of[s.pk] for s in blocking}


@pytest.mark.parametrize("query", ["?lane=bogus", "?lane=auto_approve", "?lane=", "?lane=%00", "?lane=blocking_review&lane=x"])
def test_unknown_lane_falls_back_to_blocking(people, routed, reviewer, query):
    blocked = routed(people["submitter"], lane="blocking_review")
    routed(people["submitter"], lane="async_review")
    response = reviewer.get("/review/" + query)
    assert response.status_code == 200
    page = Page(response)
    assert [n.attrs["href"] for n in page.all("a", class_="button small")] == [
        f"/review/{ReviewTask.objects.get(submission=blocked).pk}/"
    ]


def test_htmx_queue_poll_returns_only_the_queue(people, routed, reviewer):
    routed(people["submitter"], lane="async_review")
    response = reviewer.get("/review/?lane=async_review", headers={"HX-Request": "true"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "<html" not in body and body.lstrip().startswith('<div id="queue"')
    assert re.search(r'<span class="count" data-lane="async_review" id="count-async_review">1</span>', body)


def test_htmx_claim_swaps_in_the_decision_forms(blocking, reviewer):
    submission, task = blocking
    response = reviewer.post(f"/review/{task.pk}/claim/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "<html" not in body and body.lstrip().startswith('<section class="card" id="decision">')
    page = Page(response)
    assert page.by_id("approve") is not None and page.by_id("reject") is not None
    # Offered indented for editing: the same document as the draft.
    assert json.loads(page.value("edited_output")) == json.loads(task.draft.content), "the draft is offered for editing"


def test_htmx_refusal_returns_the_decision_partial_with_409(blocking, reviewer):
    submission, task = blocking
    response = reviewer.post(f"/review/{task.pk}/approve/", {"edited_output": ""}, headers={"HX-Request": "true"})
    assert response.status_code == 409
    body = response.content.decode()
    assert body.lstrip().startswith('<section class="card" id="decision">')
    assert "Claim this review first" in body


def test_a_second_decision_on_a_closed_review_is_409(blocking, reviewer):
    submission, task = blocking
    reviewer.post(f"/review/{task.pk}/claim/")
    assert reviewer.post(f"/review/{task.pk}/approve/", {}).status_code == 302
    before = _state(submission, task)
    releases = AuditEvent.objects.filter(action="output.released").count()
    for action, post in [("approve", {"edited_output": EDITED}), ("reject", {"reason_code": "tone", "reason_text": "x"}),
                         ("regenerate", {"feedback": "again"}), ("claim", {})]:
        response = reviewer.post(f"/review/{task.pk}/{action}/", post)
        assert response.status_code == 409, action
        assert "This review is already closed." in response.content.decode()
    assert _state(submission, task) == before
    assert AuditEvent.objects.filter(action="output.released").count() == releases
    # The closed review still reads fine, and says who decided.
    assert "This review is closed: Approve by reviewer-a." in reviewer.get(f"/review/{task.pk}/").content.decode()


def test_emptying_the_text_box_is_refused_not_a_silent_approval(blocking, reviewer):
    submission, task = blocking
    reviewer.post(f"/review/{task.pk}/claim/")
    before = _state(submission, task)
    response = reviewer.post(f"/review/{task.pk}/approve/", {"edited_output": "  "})
    assert response.status_code == 409
    assert "The edited output is empty" in response.content.decode()
    assert _state(submission, task) == before


def test_an_edit_made_while_the_lease_ran_out_survives_the_reclaim(blocking, reviewer):
    submission, task = blocking
    reviewer.post(f"/review/{task.pk}/claim/")
    ReviewTask.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    refused = reviewer.post(f"/review/{task.pk}/approve/", {"edited_output": EDITED})
    assert refused.status_code == 409
    page = Page(refused)
    assert page.by_id("carried-edit") is not None
    (carried,) = page.all("input", name="edited_output")  # carried in the claim form
    assert carried.attrs["value"] == EDITED

    reclaimed = reviewer.post(f"/review/{task.pk}/claim/", {"edited_output": EDITED})
    assert reclaimed.status_code == 200
    assert Page(reclaimed).value("edited_output") == EDITED  # back in the approve box
    assert reviewer.post(f"/review/{task.pk}/approve/", {"edited_output": EDITED}).status_code == 302
    submission.refresh_from_db()
    assert submission.final_output == EDITED


def test_closed_reviews_are_not_listed_in_the_queue(blocking, reviewer):
    submission, task = blocking
    assert f'href="/review/{task.pk}/"' in reviewer.get("/review/").content.decode()
    reviewer.post(f"/review/{task.pk}/claim/")
    reviewer.post(f"/review/{task.pk}/approve/", {})
    assert f'href="/review/{task.pk}/"' not in reviewer.get("/review/").content.decode()


def test_a_review_past_its_sla_is_marked_overdue(blocking, reviewer):
    submission, task = blocking
    assert "overdue" not in reviewer.get("/review/").content.decode()
    ReviewTask.objects.filter(pk=task.pk).update(due_at=timezone.now() - timedelta(minutes=1))
    page = Page(reviewer.get("/review/"))
    (mark,) = page.all("span", class_="overdue")
    assert mark.text.endswith("overdue")


def test_a_reviewer_can_release_a_claim_back_to_the_queue(blocking, reviewer, client_for):
    submission, task = blocking
    reviewer.post(f"/review/{task.pk}/claim/")
    response = reviewer.post(f"/review/{task.pk}/release/")
    assert response.status_code == 302
    task.refresh_from_db()
    assert (task.claimed_by_id, task.lease_expires_at, task.state) == (None, None, ReviewState.OPEN)
    assert AuditEvent.objects.filter(action="review.unclaimed", object_id=str(task.pk)).count() == 1
    # Someone else can take it at once; releasing a review one does not hold is refused.
    colleague = client_for("dual")
    assert colleague.post(f"/review/{task.pk}/claim/").status_code == 302
    assert reviewer.post(f"/review/{task.pk}/release/").status_code == 409
