"""The compliance officer opens a submission's evidence in a real browser, prints it, and
downloads the JSON. Debian's chromium, driven by Playwright; the screenshots are looked at."""
import hashlib
import json

import pytest
from django.db import connection, transaction
from playwright.sync_api import expect

from tests.conftest import CUSTOMER_REPLY_INPUT
from tests.e2e.test_review_loop import _login, _shot, browser  # noqa: F401  (fixture)
from tests.scripted import scripted_result
from workflows import audit, services
from workflows.models import ReviewTask

pytestmark = pytest.mark.e2e

FIRST = {"reply": "Dear Ann, sorry.", "tone": "neutral"}
SECOND = {"reply": "Dear Ann, we are sorry the parcel arrived broken.", "tone": "apologetic"}
EDITED = {"reply": "Dear Ann, we are sorry the parcel arrived broken. A replacement ships today.", "tone": "apologetic"}


def _draft(submission, content):
    claimed = services.generation_claim(submission_id=submission.pk)
    result = scripted_result(submission.workflow_version.spec, submission.data, probability=0.30,
                             content=json.dumps(content))
    services.draft_record(submission_id=submission.pk, attempt=claimed.attempts, result=result, audit_draw=0.999)


def _two_attempts_approved_with_edit(demo):
    """Drafted, sent back with feedback, drafted again, approved with an edit."""
    reviewer = demo.users["reviewer"]
    # Created and claimed in one transaction: a worker an earlier test started may still consume
    # this run's queue, and must find the submission claimed when the task sent on commit arrives.
    with transaction.atomic():
        submission = services.submission_create(version=demo.version("customer-reply"), user=demo.users["submitter"],
                                                data=dict(CUSTOMER_REPLY_INPUT))
        _draft(submission, FIRST)
    task = ReviewTask.objects.open().get(submission=submission)
    services.review_claim(task_id=task.pk, user=reviewer)
    with transaction.atomic():  # the same race for the second attempt
        services.review_regenerate(task_id=task.pk, user=reviewer, feedback="Say what went wrong with the parcel.")
        _draft(submission, SECOND)
    task = ReviewTask.objects.open().get(submission=submission)
    services.review_claim(task_id=task.pk, user=reviewer)
    services.review_approve(task_id=task.pk, user=reviewer, edited_output=json.dumps(EDITED, indent=2))
    return submission


def test_compliance_opens_prints_and_downloads_the_evidence(transactional_db, demo, live_server, browser):  # noqa: F811
    try:
        submission = _two_attempts_approved_with_edit(demo)
        audit.chain_now()  # what the chainer does within a second of each commit (migration 0012)
    finally:
        # Closed as in the other browser tests: left open, it keeps the run from dropping its database.
        connection.close()
    base = live_server.url

    page = _login(browser, base, "compliance")
    page.goto(f"{base}/submissions/{submission.pk}/")
    page.click("#evidence-link")
    expect(page.locator("h1")).to_contain_text(f"Evidence · submission #{submission.pk}")
    expect(page.locator("#evidence-draft-1")).to_be_visible()
    expect(page.locator("#evidence-draft-2")).to_contain_text("Why this lane")
    expect(page.locator("#evidence-calls tbody tr")).to_have_count(2)
    expect(page.locator("#evidence-decisions")).to_contain_text("Say what went wrong with the parcel.")
    expect(page.locator("#evidence-decisions .diff-add").first).to_contain_text("A replacement ships today")
    expect(page.locator("#how-to-verify")).to_contain_text("tools/verify_export.py")
    expect(page.locator("#evidence-events tbody tr").first).to_contain_text("submission.created")
    expect(page.locator(".topbar")).to_be_visible()
    _shot(page, "9-evidence-compliance")

    # Printed, the page has no navigation and no buttons, and nothing is cut off at the right.
    page.emulate_media(media="print")
    expect(page.locator(".topbar")).to_be_hidden()
    expect(page.locator(".print-actions")).to_be_hidden()
    expect(page.locator("#evidence-events")).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the printed page is {overflow}px wider than the paper"
    _shot(page, "10-evidence-print")
    page.emulate_media(media="screen")

    # The JSON file: every event's hash recomputes with the standard library alone.
    response = page.request.get(f"{base}/submissions/{submission.pk}/evidence.json")
    assert response.ok and "attachment" in response.headers["content-disposition"]
    document = json.loads(response.body())
    assert document["format"] == "reviewdesk-evidence/1" and document["generated_by"] == "compliance"
    for event in document["audit_events"]:
        canonical = json.dumps(event["hashed_fields"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256((event["prev_hash"] + canonical).encode()).hexdigest() == event["hash"]
    page.context.close()

    # The submitter's copy: their request, the released output and the decisions, no drafts.
    page = _login(browser, base, "submitter")
    page.goto(f"{base}/submissions/{submission.pk}/")
    expect(page.locator("#evidence-links")).to_contain_text("Your record of this request")
    page.click("#evidence-link")
    expect(page.locator("#evidence-released")).to_contain_text("A replacement ships today")
    expect(page.locator("#evidence-drafts")).to_have_count(0)
    expect(page.locator("#evidence-events")).to_have_count(0)
    expect(page.locator("#evidence-timeline .event").first).to_contain_text("submission.created")
    _shot(page, "11-evidence-submitter")
    page.context.close()
