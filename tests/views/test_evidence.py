"""Evidence per submission: the printable page and the JSON file, per role, with every audit
event's hash recomputable from the JSON alone."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders

from tests.scripted import scripted_result
from workflows import audit, services
from workflows.models import AuditEvent, ReviewTask
from workflows.selectors import may_see_drafts

from .html import Page

SECRET = "DRAFT-ONLY-WORDING-7f3a"
REVIEWER_WORDS = "REVIEWER-WORDS-91c2"


def _draft(text):
    return json.dumps({"reply": text, "tone": "neutral"})


def _next_attempt(submission, reviewer, content):
    """Send the open review back for regeneration and record the next attempt's draft."""
    task = ReviewTask.objects.open().get(submission=submission)
    services.review_claim(task_id=task.pk, user=reviewer)
    services.review_regenerate(task_id=task.pk, user=reviewer, feedback=f"{REVIEWER_WORDS} try again")
    claimed = services.generation_claim(submission_id=submission.pk)
    result = scripted_result(submission.workflow_version.spec, submission.data, probability=0.30, content=content)
    services.draft_record(submission_id=submission.pk, attempt=claimed.attempts, result=result, audit_draw=0.999)


@pytest.fixture
def rejected_after_three(people, routed):
    """A customer reply by `submitter`: three blocking drafts, two sent back, the last rejected."""
    submission = routed(people["submitter"], content=_draft(f"{SECRET} one"))
    reviewer = people["reviewer_a"]
    _next_attempt(submission, reviewer, _draft(f"{SECRET} two"))
    _next_attempt(submission, reviewer, _draft(f"{SECRET} three"))
    task = ReviewTask.objects.open().get(submission=submission)
    services.review_claim(task_id=task.pk, user=reviewer)
    services.review_reject(task_id=task.pk, user=reviewer, reason_code="tone", reason_text=f"{REVIEWER_WORDS} rude")
    submission.refresh_from_db()
    return submission


def _json(client, submission):
    response = client.get(f"/submissions/{submission.pk}/evidence.json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["Content-Disposition"] == f'attachment; filename="submission-{submission.pk}-evidence.json"'
    return json.loads(response.content)


@pytest.mark.parametrize("who", ["compliance", "reviewer_a"])
def test_staff_get_every_draft_call_decision_and_history(who, rejected_after_three, client_for):
    doc = _json(client_for(who), rejected_after_three)
    assert doc["format"] == "reviewdesk-evidence/1"
    assert doc["generated_by"] in ("compliance", "reviewer-a") and doc["generated_at"]
    assert doc["view"] == "full"
    assert [d["attempt"] for d in doc["drafts"]] == [1, 2, 3]
    first = doc["drafts"][0]
    assert SECRET in first["content"] and first["content_hash"]
    assert {"certainty", "routing_reason"} <= set(first["score_components"])
    assert "earlier_attempts" in first and "findings" in first
    assert {c["attempt"] for c in doc["model_calls"]} == {1, 2, 3}
    call = doc["model_calls"][0]
    assert {"purpose", "model_requested", "model_answered", "outcome", "prompt_tokens", "completion_tokens",
            "cost_usd", "latency_ms", "error"} <= set(call)
    assert doc["cost"]["requests"] == len(doc["model_calls"])
    assert [d["decision"] for d in doc["decisions"]] == ["regenerate", "regenerate", "reject"]
    assert REVIEWER_WORDS in doc["decisions"][-1]["reason_text"]
    history_types = {row["object_type"] for row in doc["history"]}
    assert history_types == {"submission", "draft", "reviewtask"}
    assert all({"time", "user", "change_reason", "changed_fields"} <= set(row) for row in doc["history"])
    reasons = [row["change_reason"] for row in doc["history"] if row["object_type"] == "submission"]
    assert "rejected" in reasons
    assert doc["verification"]["tools"] == ["tools/verify_export.py", "docs/COMPLIANCE.md"]
    actions = [e["hashed_fields"]["action"] for e in doc["audit_events"]]
    assert actions[0] == "submission.created" and "review.rejected" in actions


def test_every_event_hash_recomputes_from_the_json_alone(rejected_after_three, client_for):
    """What an auditor does with the file: standard library only, no ReviewDesk code."""
    audit.chain_now()  # events are linked after their commit (migration 0012)
    doc = _json(client_for("compliance"), rejected_after_three)
    events = doc["audit_events"]
    assert len(events) >= 10
    for event in events:
        canonical = json.dumps(event["hashed_fields"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256((event["prev_hash"] + canonical).encode("utf-8")).hexdigest()
        assert digest == event["hash"], f"event {event['id']}"
    stored = dict(AuditEvent.objects.filter(pk__in=[e["id"] for e in events]).values_list("pk", "hash"))
    assert {e["id"]: e["hash"] for e in events} == stored
    # A changed fact no longer matches: the recomputation really checks something.
    tampered = dict(events[0]["hashed_fields"], actor="someone-else")
    canonical = json.dumps(tampered, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256((events[0]["prev_hash"] + canonical).encode()).hexdigest() != events[0]["hash"]


def test_the_submitter_gets_their_own_view_without_drafts_or_hashes(rejected_after_three, client_for):
    owner = client_for("submitter")
    doc = _json(owner, rejected_after_three)
    text = json.dumps(doc)
    assert doc["view"] == "submitter"
    assert SECRET not in text and REVIEWER_WORDS not in text
    assert "drafts" not in doc and "model_calls" not in doc and "cost" not in doc
    assert all(set(e) == {"created_at", "actor", "action", "hash"} for e in doc["audit_events"])
    assert "prev_hash" not in text and "hashed_fields" not in text and "content_hash" not in text
    assert {row["object_type"] for row in doc["history"]} == {"submission"}
    assert all(row["changes"] is None for row in doc["history"])
    assert doc["input"][0]["value"] == rejected_after_three.data[doc["input"][0]["name"]]
    assert doc["decisions"][-1]["reason"] == "Wrong tone" and "reason_text" not in doc["decisions"][-1]

    page = Page(owner.get(f"/submissions/{rejected_after_three.pk}/evidence/"))
    assert SECRET not in page.html and REVIEWER_WORDS not in page.html
    assert page.by_id("evidence-drafts") is None and page.by_id("evidence-calls") is None
    assert page.by_id("evidence-events") is None and page.by_id("how-to-verify") is None
    assert "Wrong tone" in page.by_id("evidence-decisions").text
    assert rejected_after_three.data["customer_name"] in page.by_id("evidence-input").text


def test_staff_page_shows_drafts_calls_hashes_and_how_to_verify(rejected_after_three, client_for):
    audit.chain_now()  # events are linked after their commit (migration 0012)
    page = Page(client_for("compliance").get(f"/submissions/{rejected_after_three.pk}/evidence/"))
    assert page.by_id("evidence-draft-3") is not None and f"{SECRET} three" in page.html
    assert "Why this lane" in page.by_id("evidence-draft-1").text
    assert "gpt-4o-mini" in page.by_id("evidence-calls").text
    assert REVIEWER_WORDS in page.by_id("evidence-decisions").text
    events = AuditEvent.objects.filter(object_type="submission", object_id=str(rejected_after_three.pk))
    for event in events:
        assert event.hash in page.html and event.prev_hash in page.html
    verify = page.by_id("how-to-verify").text
    assert "tools/verify_export.py" in verify and "docs/COMPLIANCE.md" in verify and "sha256" in verify
    # The print layout ships with the page: since the Content-Security-Policy (issue 10) allows no
    # inline <style>, as the evidence stylesheet the page links, not as a block in the page.
    sheet = [n.attrs["href"] for n in page.all("link", rel="stylesheet") if n.attrs["href"].endswith("evidence.css")]
    assert len(sheet) == 1
    assert "@media print" not in page.html
    assert "@media print" in Path(finders.find("css/evidence.css")).read_text()


def test_released_output_is_in_the_submitters_copy(people, routed, client_for):
    submission = routed(people["submitter"], lane="async_review", content=_draft(SECRET))
    doc = _json(client_for("submitter"), submission)
    assert SECRET in doc["submission"]["released_output"]
    assert "drafts" not in doc


def test_a_submitter_who_is_also_compliance_sees_everything(people, routed, make_user, client_for):
    both = make_user("submitting-officer", "submitter", "compliance")
    submission = routed(both, content=_draft(SECRET))
    assert may_see_drafts(both, submission)
    assert SECRET in json.dumps(_json(client_for(both), submission))


def test_the_rule_is_the_submission_pages_rule(people, routed, client_for):
    submission = routed(people["dual"], content=_draft(SECRET))
    for who in ("dual", "reviewer_a", "compliance"):
        page = client_for(who).get(f"/submissions/{submission.pk}/")
        assert page.context["can_see_drafts"] == may_see_drafts(people[who], submission), who


@pytest.mark.parametrize("who", ["other_submitter", "reviewer_b", "wfadmin"])
def test_out_of_scope_is_404_and_records_no_export(who, rejected_after_three, client_for):
    client = client_for(who)
    before = AuditEvent.objects.filter(action="evidence.exported").count()
    for suffix in ("evidence/", "evidence.json"):
        assert client.get(f"/submissions/{rejected_after_three.pk}/{suffix}").status_code == 404
    assert AuditEvent.objects.filter(action="evidence.exported").count() == before


def test_every_download_is_an_audit_event_outside_the_submissions_trail(rejected_after_three, client_for, people):
    client_for("compliance").get(f"/submissions/{rejected_after_three.pk}/evidence.json")
    client_for("submitter").get(f"/submissions/{rejected_after_three.pk}/evidence/")
    events = list(AuditEvent.objects.filter(action="evidence.exported").order_by("id"))
    assert [(e.actor_label, e.object_type, e.object_id) for e in events] == [
        ("compliance", "evidence", str(rejected_after_three.pk)),
        ("submitter", "evidence", str(rejected_after_three.pk)),
    ]
    assert [e.payload["format"] for e in events] == ["json", "html"]
    assert [e.payload["view"] for e in events] == ["full", "submitter"]
    # Downloads do not show up as steps of the submission itself.
    doc = _json(client_for("compliance"), rejected_after_three)
    assert "evidence.exported" not in {e["hashed_fields"]["action"] for e in doc["audit_events"]}


def test_the_submission_page_links_both_downloads(rejected_after_three, client_for):
    for who in ("submitter", "reviewer_a", "compliance"):
        page = Page(client_for(who).get(f"/submissions/{rejected_after_three.pk}/"))
        assert page.by_id("evidence-link").attrs["href"] == f"/submissions/{rejected_after_three.pk}/evidence/"
        assert page.by_id("evidence-json-download").attrs["href"] == f"/submissions/{rejected_after_three.pk}/evidence.json"


@pytest.mark.parametrize("suffix", ["evidence/", "evidence.json"])
def test_queries_do_not_grow_with_attempts(suffix, people, routed, rejected_after_three, client_for,
                                           django_assert_max_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    one = routed(people["submitter"])
    client = client_for("compliance")
    client.get(f"/submissions/{one.pk}/{suffix}")  # warm the session and the parsed spec
    with CaptureQueriesContext(connection) as single:
        assert client.get(f"/submissions/{one.pk}/{suffix}").status_code == 200
    with django_assert_max_num_queries(len(single.captured_queries)):
        assert client.get(f"/submissions/{rejected_after_three.pk}/{suffix}").status_code == 200
    with django_assert_max_num_queries(25):
        client.get(f"/submissions/{rejected_after_three.pk}/{suffix}")


def test_provider_text_is_for_staff_only(people, demo, client_for, customer_reply_input):
    provider_text = "upstream said: key sk-live-PROVIDER-TEXT-5e1 is revoked"
    submission = services.submission_create(version=demo.version("customer-reply"), user=people["submitter"],
                                            data=customer_reply_input)
    services.generation_claim(submission_id=submission.pk)
    services.generation_fail(submission_id=submission.pk, attempt=1, kind="provider_refused", reason=provider_text)
    for suffix in ("evidence/", "evidence.json"):
        owner = client_for("submitter").get(f"/submissions/{submission.pk}/{suffix}").content.decode()
        assert "PROVIDER-TEXT" not in owner and "drafting service refused" in owner
        staff = client_for("reviewer_a").get(f"/submissions/{submission.pk}/{suffix}").content.decode()
        assert "PROVIDER-TEXT" in staff
