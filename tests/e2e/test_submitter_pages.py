"""The submitter's pages in a real browser (issue 8, section 3): the draft appearing on the page
while the model writes it (served over ASGI by uvicorn, as in production), two tabs on one
workflow keeping their answers apart, a failed request leading to a new one prefilled, a
withdrawn output saying it must not be used, and a long paste warned about instead of cut.
Debian's chromium through Playwright, with the CSP watched; screenshots at desktop and 390 px."""
from __future__ import annotations

import json
import re
import time

import pytest
from django.db import connection, transaction
from playwright.sync_api import expect

from tests.conftest import CUSTOMER_REPLY_INPUT, MODEL_API_KEY
from tests.e2e.test_csp import Watched
from tests.e2e.test_review_loop import _shot, browser  # noqa: F401  (fixture)
from tests.fault_rig import start_uvicorn, stop
from tests.scripted import scripted_result
from tests.unit.test_draft_stream_rule import streamable_definition
from tests.views.conftest import DRAFT_CONTENT, LANE_PROBABILITY
from workflows import services
from workflows.definitions import parse_definition
from workflows.models import ReviewTask, Submission

pytestmark = pytest.mark.e2e

PHONE = {"width": 390, "height": 844}


@pytest.fixture(autouse=True)
def _close_the_connection_at_the_end():
    """As in the other browser tests: a connection left open (these tests read rows between the
    browser's steps) keeps the run from dropping its database."""
    yield
    connection.close()


@pytest.fixture
def asgi_server(celery_worker_process, transactional_db, tmp_path):
    """The app under uvicorn (reviewdesk.asgi, as gunicorn's uvicorn workers serve it), on this
    run's test database and Redis namespace."""
    url, proc = start_uvicorn(tmp_path / "uvicorn.log", OPENAI_API_KEY=MODEL_API_KEY)
    yield url
    stop(proc, timeout=15)


@pytest.fixture
def streamable(demo):
    version, _ = services.workflow_publish(spec=parse_definition({**streamable_definition(), "cache": False}))
    return version


def _log_in_with_a_session(watched, user):
    """The uvicorn process hashes passwords with the production hasher, the test run with a fast
    one: hand the browser a session made here instead of typing the password."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    host = watched.base.split("//", 1)[1].split(":")[0]
    watched.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                                  "domain": host, "path": "/"}])
    watched.goto("/")
    expect(watched.page.locator(".username")).to_have_text(user.get_username())


def _phone_shot(watched, name):
    page = watched.page
    page.set_viewport_size(PHONE)
    _shot(page, f"{name}-390")
    page.set_viewport_size({"width": 1280, "height": 900})


def test_the_draft_appears_progressively_on_the_submitters_page(worker, fake_model, demo, streamable, asgi_server,
                                                               browser):  # noqa: F811
    user = Watched(browser, asgi_server)
    _log_in_with_a_session(user, demo.users["submitter"])
    connection.close()
    page = user.page
    urls = []
    page.on("request", lambda r: urls.append(r.url))
    user.goto("/")
    page.click("text=Customer note")
    page.fill("#id_customer_name", "Ann Example")
    page.select_option("#id_channel", "email")
    page.click("button[value=next]")
    expect(page.locator(".steps li.current")).to_contain_text("Complaint")
    page.fill("#id_complaint", "The parcel arrived broken. [[plain]] [[stream-delay:0.4]] [[lane:auto]]")
    page.click("button[value=next]")
    expect(page).to_have_url(re.compile(r"/submissions/\d+/$"))
    submission_id = int(re.search(r"/submissions/(\d+)/", page.url).group(1))

    # While the model writes, the text grows on the page: watch it. 0.4 s per token (well inside
    # the worker's 10 s model timeout) keeps the model writing after the page has connected on a slow machine
    # (at 0.2 s a page that connected late once read the whole text in its first batch).
    box = page.locator("#draft-stream")
    expect(page.locator("#draft-stream-card")).to_be_visible(timeout=20_000)
    expect(page.locator("#submission-state")).to_have_text("Drafting…")
    seen = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and page.locator("#draft-stream").count():
        try:
            text = box.inner_text(timeout=1000)
        except Exception:  # noqa: BLE001 - the preview was removed between count() and here
            break
        if text and (not seen or text != seen[-1]):
            seen.append(text)
            if len(seen) == 2:
                _shot(page, "submitter-1-draft-streaming")
        time.sleep(0.15)
    growing = [t for t in seen if t]
    assert len(growing) >= 2, seen
    assert all(later.startswith(earlier) and len(later) > len(earlier) for earlier, later in zip(growing, growing[1:]))

    # The final state: approved, the released text in place of the preview.
    expect(page.locator("#submission-state")).to_have_text("Approved", timeout=20_000)
    expect(page.locator("#draft-stream-card")).to_have_count(0)
    released = Submission.objects.get(pk=submission_id).final_output
    expect(page.locator("#released-output")).to_have_text(released)
    assert released.startswith(growing[-1].rstrip()) or growing[-1].startswith(released[:20])
    assert any(f"/submissions/{submission_id}/stream/" in url for url in urls), "the page used the stream"
    _shot(page, "submitter-2-approved")
    _phone_shot(user, "submitter-2-approved")
    user.assert_clean()


def test_two_tabs_on_one_workflow_keep_their_answers_apart(transactional_db, demo, live_server, browser):  # noqa: F811
    connection.close()
    user = Watched(browser, live_server.url)
    user.login("submitter")
    tab_a, tab_b = user.page, user.context.new_page()
    for tab, name in ((tab_a, "Ann Tab-A"), (tab_b, "Bob Tab-B")):
        tab.goto(live_server.url + "/workflows/customer-reply/new/")
        tab.fill("#id_customer_name", name)
        tab.select_option("#id_channel", "email")
    # Both tabs go to step 2, one after the other, in the same session.
    for tab in (tab_a, tab_b):
        tab.click("button[value=next]")
        expect(tab.locator(".steps li.current")).to_contain_text("Complaint")
        assert "?w=" in tab.url
    assert tab_a.url != tab_b.url
    tab_a.fill("#id_complaint", "Tab A's complaint.")
    tab_b.fill("#id_complaint", "Tab B's complaint.")
    # Back in tab B: its own name, not the one typed last in the other tab.
    tab_b.click("button[value=back]")
    expect(tab_b.locator("#id_customer_name")).to_have_value("Bob Tab-B")
    tab_a.reload()
    tab_a.click("button[value=back]")
    expect(tab_a.locator("#id_customer_name")).to_have_value("Ann Tab-A")
    # Each finishes with its own answers.
    for tab, complaint in ((tab_a, "Tab A's complaint."), (tab_b, "Tab B's complaint.")):
        tab.click("button[value=next]")
        tab.fill("#id_complaint", complaint)
        tab.click("button[value=next]")
        expect(tab).to_have_url(re.compile(r"/submissions/\d+/$"))
    data = {s.data["customer_name"]: s.data["complaint"] for s in Submission.objects.all()}
    assert data == {"Ann Tab-A": "Tab A's complaint.", "Bob Tab-B": "Tab B's complaint."}
    user.assert_clean()


def test_a_long_paste_is_warned_about_and_never_cut(transactional_db, demo, live_server, browser):  # noqa: F811
    connection.close()
    user = Watched(browser, live_server.url)
    user.login("submitter")
    page = user.page
    user.goto("/workflows/customer-reply/new/")
    page.fill("#id_customer_name", "Ann Example")
    page.select_option("#id_channel", "email")
    page.click("button[value=next]")
    expect(page.locator(".steps li.current")).to_contain_text("Complaint")
    text = ("The parcel arrived broken. " * 400).strip() + "!"  # 10,800 characters; the field takes 8,000
    page.dispatch_event("#id_complaint", "paste")
    page.fill("#id_complaint", text)
    warning = page.locator("#id_complaint_field-warning")
    expect(warning).to_contain_text("What you pasted makes this answer 10,800 characters long")
    expect(warning).to_contain_text("Nothing has been cut")
    expect(page.locator("#id_complaint_char-count")).to_have_text("10,800 / 8,000 characters")
    assert page.locator("#id_complaint").input_value() == text, "the browser kept the whole paste"
    # (No screenshot before the htmx swap: Playwright's leaves empty style="" attributes on the
    # inputs, which htmx's settle would then copy, a CSP violation of the test's own making.)
    page.click("button[value=next]")
    # The server's refusal writes the numbers as the counter does.
    expect(page.locator("#id_complaint_error")).to_contain_text(
        "This answer is 10,800 characters long; the most it can take is 8,000. Nothing was cut")
    assert page.locator("#id_complaint").input_value() == text
    # The swapped-in step warns again (static/js/submit.js runs on htmx:load).
    expect(warning).to_contain_text("This answer is now 10,800 characters long")
    _shot(page, "submitter-3-long-paste-refused")
    # Shortened: the warning goes.
    page.fill("#id_complaint", text[:7000])
    expect(warning).to_have_count(0)
    assert Submission.objects.count() == 0
    user.assert_clean()


def _claimed_submission(demo) -> Submission:
    """A committed submission whose drafting this test does by hand: created and claimed in one
    transaction, so the session's worker (running once an earlier test of the run started it),
    which gets the generation task on commit, finds it claimed and leaves it alone instead of
    racing the test for it (seen once in CI-like runs)."""
    with transaction.atomic():
        submission = services.submission_create(version=demo.version("customer-reply"), user=demo.users["submitter"],
                                                data=dict(CUSTOMER_REPLY_INPUT))
        claimed = services.generation_claim(submission_id=submission.pk)
    submission.refresh_from_db()
    assert claimed is not None and submission.attempts == claimed.attempts == 1
    return submission


def test_a_failed_request_leads_to_a_new_request_prefilled(transactional_db, demo, live_server, browser):  # noqa: F811
    submission = _claimed_submission(demo)
    services.generation_fail(submission_id=submission.pk, attempt=1, kind="provider_refused",
                             reason="HTTP 404: The model `gpt-4o-mini` does not exist")
    connection.close()
    user = Watched(browser, live_server.url)
    user.login("submitter")
    page = user.page
    user.goto(f"/submissions/{submission.pk}/")
    expect(page.locator("#submission-state")).to_have_text("Could not be drafted")
    expect(page.locator("#failure-message")).to_contain_text("The drafting service refused the request")
    expect(page.locator("body")).not_to_contain_text("does not exist")
    expect(page.locator("#retry")).to_be_visible()
    _shot(page, "submitter-4-failed")
    _phone_shot(user, "submitter-4-failed")
    page.click("#start-again")
    expect(page).to_have_url(re.compile(r"/workflows/customer-reply/new/1/\?w=[0-9a-f]{32}$"))
    expect(page.locator("#prefilled-notice")).to_be_visible()
    expect(page.locator("#id_customer_name")).to_have_value("Ann Example")
    expect(page.locator("#id_customer_email")).to_have_value("ann@example.com")
    _shot(page, "submitter-5-prefilled")
    page.click("button[value=next]")
    expect(page.locator("#id_complaint")).to_have_value(CUSTOMER_REPLY_INPUT["complaint"])
    expect(page.locator("#id_refund_offered")).to_be_checked()
    page.click("button[value=next]")
    expect(page).to_have_url(re.compile(r"/submissions/\d+/$"))
    newer = Submission.objects.exclude(pk=submission.pk).get()
    assert newer.data == submission.data
    user.assert_clean()


def test_a_withdrawn_output_says_it_must_not_be_used(transactional_db, demo, live_server, browser):  # noqa: F811
    submission = _claimed_submission(demo)
    result = scripted_result(submission.workflow_version.spec, submission.data,
                             probability=LANE_PROBABILITY["async_review"],
                             content=json.dumps(DRAFT_CONTENT["customer-reply"]))
    services.draft_record(submission_id=submission.pk, attempt=submission.attempts, result=result, audit_draw=0.999)
    reviewer = demo.users["reviewer"]
    task = ReviewTask.objects.get(submission=submission)
    services.review_claim(task_id=task.pk, user=reviewer)
    services.review_reject(task_id=task.pk, user=reviewer, reason_code="inaccurate", reason_text="Wrong order.")
    connection.close()
    user = Watched(browser, live_server.url)
    user.login("submitter")
    page = user.page
    user.goto(f"/submissions/{submission.pk}/")
    expect(page.locator("#submission-state")).to_have_text("Withdrawn: do not use")
    notice = page.locator("#withdrawn-notice")
    expect(notice).to_contain_text("the text released earlier must not be used")
    expect(notice).to_contain_text("Do not send it, copy it or rely on it")
    expect(page.locator("#released-output")).to_have_count(0)
    expect(page.locator("#start-again")).to_be_visible()
    _shot(page, "submitter-6-withdrawn")
    _phone_shot(user, "submitter-6-withdrawn")
    user.goto("/submissions/")
    expect(page.locator("#submissions .plain-state").first).to_have_text("Withdrawn: do not use")
    _shot(page, "submitter-7-list")
    _phone_shot(user, "submitter-7-list")
    user.assert_clean()
