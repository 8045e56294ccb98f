"""The Content-Security-Policy (issue 10) in a real browser: every main page loads with the
header on and not one CSP violation, and the htmx behaviour still works (its requests happen,
the review queue's idle poll and the evidence page's print button run from static/js/app.js).
Debian's chromium, driven by Playwright; the screenshots are looked at."""
import json
import re

import pytest
from django.db import connection, transaction
from playwright.sync_api import expect

from tests.conftest import CUSTOMER_REPLY_INPUT
from tests.e2e.test_review_loop import PASSWORD, _shot, browser  # noqa: F401  (fixture)
from tests.scripted import scripted_result
from workflows import services
from workflows.models import ReviewTask

pytestmark = pytest.mark.e2e

# Every blocked inline script, inline style or eval is reported twice: on chromium's console, and
# as a securitypolicyviolation event, which the init script hands to Python at once (a list kept
# in the page would be lost with the next navigation).
COLLECT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.__reportCspViolation(e.violatedDirective + " " + (e.blockedURI || "inline") + " at "
                              + document.location.pathname + " " + (e.sourceFile || "") + ":" + e.lineNumber);
});
"""


def _blocking_review(demo):
    """A submission whose draft waits for a blocking review (no worker: a scripted draft).

    Created and claimed in one transaction: a Celery worker an earlier test started may still be
    consuming this run's queue, and must find the submission already claimed when the
    generation task (sent on commit) reaches it."""
    with transaction.atomic():
        submission = services.submission_create(version=demo.version("customer-reply"), user=demo.users["submitter"],
                                                data=dict(CUSTOMER_REPLY_INPUT))
        claimed = services.generation_claim(submission_id=submission.pk)
    result = scripted_result(submission.workflow_version.spec, submission.data, probability=0.30,
                             content=json.dumps({"reply": "Dear Ann, sorry.", "tone": "neutral"}))
    services.draft_record(submission_id=submission.pk, attempt=claimed.attempts, result=result, audit_draw=0.999)
    return submission, ReviewTask.objects.open().get(submission=submission)


class Watched:
    """A browser context that records CSP violations (console and event), the CSP header of
    every document, and every htmx request."""

    def __init__(self, chromium, base):
        self.base = base
        self.context = chromium.new_context(viewport={"width": 1280, "height": 900})
        self.events = []
        self.context.expose_function("__reportCspViolation", lambda violation: self.events.append(violation))
        self.context.add_init_script(COLLECT_VIOLATIONS)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.console, self.htmx, self.headers = [], [], {}
        self.page.on("console", lambda m: self.console.append(m.text) if "Content Security Policy" in m.text else None)
        self.page.on("request", lambda r: self.htmx.append((r.method, r.url)) if r.headers.get("hx-request") else None)
        self.page.on("response", self._document)

    def _document(self, response):
        if response.request.resource_type == "document":
            self.headers[response.url] = response.headers.get("content-security-policy")

    def goto(self, path):
        response = self.page.goto(self.base + path)
        assert response.ok, (path, response.status)
        return response

    def login(self, username):
        self.goto("/accounts/login/")
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", PASSWORD)
        self.page.click("button[type=submit]")
        expect(self.page.locator(".username")).to_have_text(username)

    def assert_clean(self):
        assert self.events == [], self.events
        assert self.console == [], self.console
        for url, header in self.headers.items():
            assert header and "script-src 'self'" in header and "style-src 'self'" in header, (url, header)
            assert "unsafe-inline" not in header and "unsafe-eval" not in header, (url, header)


def test_main_pages_load_under_the_csp_without_violations(transactional_db, demo, live_server, browser):  # noqa: F811
    try:
        submission, task = _blocking_review(demo)
    finally:
        connection.close()  # as in the other browser tests: left open, it keeps the run from dropping its database
    base = live_server.url

    # The submitter: log-in page, home, the guided form (an htmx step), the submission page.
    submitter = Watched(browser, base)
    submitter.login("submitter")
    submitter.goto("/")
    submitter.page.click("text=Customer reply")
    expect(submitter.page.locator(".steps li.current")).to_contain_text("Customer")
    submitter.page.click("button[value=next]")  # nothing filled: htmx swaps in the field messages
    expect(submitter.page.locator("#id_customer_name_error")).to_contain_text("This field is required")
    assert any(method == "POST" and "/new/" in url for method, url in submitter.htmx), submitter.htmx
    submitter.goto(f"/submissions/{submission.pk}/")
    expect(submitter.page.locator("#submission-state")).to_have_text("Waiting for a reviewer")
    submitter.goto("/submissions/")
    # The e-mail settings page (issue 8), reached from the navigation; saving a choice.
    submitter.page.click("header nav >> text=E-mail settings")
    expect(submitter.page.locator("h1")).to_have_text("E-mail notifications")
    submitter.page.uncheck("#id_retraction")
    submitter.page.click("#notification-preferences button[type=submit]")
    expect(submitter.page.locator(".messages")).to_contain_text("Your e-mail choices are saved")
    expect(submitter.page.locator("#id_retraction")).not_to_be_checked()
    expect(submitter.page.locator("#id_decision")).to_be_checked()
    _shot(submitter.page, "notification-preferences-submitter")
    submitter.assert_clean()
    submitter.context.close()

    # The reviewer: the queue (htmx tabs, idle poll), the review page with its certainty bars,
    # and the claim (an htmx post).
    reviewer = Watched(browser, base)
    reviewer.login("reviewer")
    # The queue polls every 15 s while nothing on the page has the focus (the idle check now in
    # static/js/app.js rather than an htmx filter that htmx would run through Function()).
    with reviewer.page.expect_request(lambda r: bool(r.headers.get("hx-request")) and "/review/counts/?" in r.url,
                                      timeout=25_000):
        reviewer.goto("/review/")
    expect(reviewer.page.locator("#queue")).to_contain_text(f"{submission.pk}")
    _shot(reviewer.page, "csp-1-review-queue")
    reviewer.page.locator("nav.tabs a.tab").nth(1).click()
    expect(reviewer.page).to_have_url(re.compile(r"\?lane="))
    assert sum(1 for method, url in reviewer.htmx if "/review/?lane=" in url) >= 1, reviewer.htmx
    assert any("/review/counts/?" in url for method, url in reviewer.htmx), reviewer.htmx
    # With the focus on a control the poll's request is skipped; on the page body it is sent.
    poll = "htmx.ajax('GET', '/review/counts/?lane=blocking_review', {source: '#queue-poll', swap: 'none'})"
    reviewer.page.focus("nav.tabs a.tab >> nth=0")
    before = len(reviewer.htmx)
    reviewer.page.evaluate(poll)
    reviewer.page.wait_for_timeout(500)
    assert len(reviewer.htmx) == before, reviewer.htmx[before:]
    reviewer.page.evaluate("document.activeElement.blur()")
    reviewer.page.evaluate(poll)
    reviewer.page.wait_for_timeout(500)
    assert len(reviewer.htmx) == before + 1, reviewer.htmx[before:]
    reviewer.goto(f"/review/{task.pk}/")
    # The certainty bars are SVG now (no style attribute): drawn, with a width in proportion.
    bar = reviewer.page.locator("#field-certainty svg.certainty-bar").first
    expect(bar).to_be_visible()
    assert 0 < float(bar.locator("rect").get_attribute("width")) <= 100
    _shot(reviewer.page, "csp-2-review-page")
    reviewer.page.click("#claim")
    expect(reviewer.page.locator("#decision")).to_contain_text("You hold this review")
    assert any(method == "POST" and f"/review/{task.pk}/claim" in url for method, url in reviewer.htmx), reviewer.htmx
    reviewer.goto("/account/notifications/")
    expect(reviewer.page.locator("#id_new_work")).to_be_checked()
    _shot(reviewer.page, "notification-preferences-reviewer")
    reviewer.page.set_viewport_size({"width": 390, "height": 844})
    _shot(reviewer.page, "notification-preferences-reviewer-390")
    reviewer.assert_clean()
    reviewer.context.close()

    # Compliance: the audit trail and the evidence page (its CSS now a static file, its print
    # button wired by static/js/app.js).
    compliance = Watched(browser, base)
    compliance.login("compliance")
    compliance.goto("/audit/")
    expect(compliance.page.locator("h1")).to_contain_text("Audit")
    compliance.goto(f"/submissions/{submission.pk}/evidence/")
    expect(compliance.page.locator("#evidence-events")).to_be_visible()
    # The evidence stylesheet applies: hash cells are monospace.
    font = compliance.page.locator("#evidence-events td.hash-cell").first.evaluate("e => getComputedStyle(e).fontFamily")
    assert "monospace" in font, font
    # (A function, so that Playwright does not call the stub it would otherwise return.)
    compliance.page.evaluate("() => { window.__printed = 0; window.print = () => { window.__printed += 1; }; }")
    compliance.page.click("[data-print]")
    assert compliance.page.evaluate("window.__printed") == 1
    _shot(compliance.page, "csp-3-evidence")
    # The calibration page's charts (Chart.js from static/, data in a json_script block).
    compliance.goto("/calibration/customer-reply/")
    expect(compliance.page.locator("#reliability-chart canvas")).to_be_visible()
    compliance.assert_clean()
    compliance.context.close()

    # The workflow admin: evals, the version editor (checked as they type, over htmx), the
    # calibration page.
    admin = Watched(browser, base)
    admin.login("wfadmin")
    admin.goto("/evals/customer-reply/")
    admin.goto("/evals/customer-reply/versions/edit/")
    source = admin.page.locator("#id_source")
    source.fill(source.input_value().replace("auto_approve_at: 0.90", "auto_approve_at: 0.93"))
    source.press("End")
    expect(admin.page.locator("#check pre.diff")).to_contain_text("+  auto_approve_at: 0.93")
    assert any("/versions/check/" in url for _, url in admin.htmx)
    admin.goto("/calibration/customer-reply/")
    expect(admin.page.locator("#risk-coverage-chart canvas")).to_be_visible()
    admin.assert_clean()
    admin.context.close()


def test_the_locked_out_log_in_page_is_plain_and_within_the_csp(transactional_db, demo, live_server, browser, settings):  # noqa: F811
    settings.AXES_FAILURE_LIMIT = 2
    visitor = Watched(browser, live_server.url)
    visitor.goto("/accounts/login/")
    for _ in range(2):
        visitor.page.fill("#id_username", "submitter")
        visitor.page.fill("#id_password", "not-the-password")
        visitor.page.click("button[type=submit]")
    expect(visitor.page.locator("#login-locked-out")).to_contain_text("Too many failed log-ins")
    # Even the right password is refused now, with the same message and no stack trace.
    visitor.page.fill("#id_username", "submitter")
    visitor.page.fill("#id_password", PASSWORD)
    with visitor.page.expect_response(lambda r: r.url.endswith("/accounts/login/") and r.request.method == "POST") as answer:
        visitor.page.click("button[type=submit]")
    assert answer.value.status == 429
    expect(visitor.page.locator("#login-locked-out")).to_be_visible()
    expect(visitor.page.locator(".username")).to_have_count(0)
    _shot(visitor.page, "csp-4-locked-out")
    visitor.assert_clean()
    visitor.context.close()


def test_review_page_states_load_under_the_csp(transactional_db, demo, live_server, browser):  # noqa: F811
    """The review page (issue 8): claimed with the structured editor, a diff preview, a refused
    approval, the shortcuts dialog (static/js/review.js), and the queue's "n" shortcut."""
    try:
        submission, task = _blocking_review(demo)
    finally:
        connection.close()
    reviewer = Watched(browser, live_server.url)
    reviewer.login("reviewer")
    reviewer.goto("/review/")
    expect(reviewer.page.locator("html[data-shortcuts=on]")).to_have_count(1)  # review.js runs on the queue
    reviewer.page.keyboard.press("n")
    expect(reviewer.page).to_have_url(re.compile(rf"/review/{task.pk}/$"))
    expect(reviewer.page.locator("#ed-reply")).to_be_visible()
    reviewer.page.fill("#ed-reply", "Dear Ann, a replacement ships today.")
    reviewer.page.click("#preview")
    expect(reviewer.page.locator("#diff-preview .diff-add").first).to_be_visible()
    reviewer.page.fill("#ed-reply", "")
    reviewer.page.click("#approve")  # refused: the reply may not be empty; the page comes back
    expect(reviewer.page.locator("#review-status [role=alert]")).to_contain_text("Reply (reply)")
    reviewer.page.locator("#raw-edit summary").click()
    expect(reviewer.page.locator("#id_edited_output")).to_be_visible()
    reviewer.page.keyboard.press("Escape")
    reviewer.page.evaluate("document.activeElement && document.activeElement.blur()")
    reviewer.page.keyboard.press("?")
    expect(reviewer.page.locator("#shortcuts")).to_be_visible()
    _shot(reviewer.page, "csp-review-shortcuts")
    reviewer.assert_clean()
    reviewer.context.close()



def test_the_queue_pages_load_under_the_csp_without_violations(transactional_db, demo, live_server, browser):  # noqa: F811
    """The queue's tabs and filters, the bulk confirm step and the review page's lease heartbeat
    (static/js/app.js, a fetch) run with zero violations."""
    try:
        _blocking_review(demo)
        with transaction.atomic():
            submission = services.submission_create(version=demo.version("customer-reply"), user=demo.users["submitter"],
                                                    data=dict(CUSTOMER_REPLY_INPUT))
            claimed = services.generation_claim(submission_id=submission.pk)
        result = scripted_result(submission.workflow_version.spec, submission.data, probability=0.75,
                                 content=json.dumps({"reply": "Dear Ann, sorry.", "tone": "apologetic"}))
        services.draft_record(submission_id=submission.pk, attempt=claimed.attempts, result=result, audit_draw=0.999)
    finally:
        connection.close()
    reviewer = Watched(browser, live_server.url)
    reviewer.login("reviewer")
    reviewer.goto("/review/?lane=async_review&finding=none&age=")
    reviewer.page.check("#select-all")
    reviewer.page.click("#bulk-selected")
    expect(reviewer.page.locator("#bulk-question")).to_have_text("Confirm 1 released draft as reviewed?")
    reviewer.goto("/review/?lane=audit_sample&workflow=no-such-workflow")
    expect(reviewer.page.locator(".queue-notice")).to_contain_text("You review no workflow")
    reviewer.goto("/review/?lane=blocking_review")
    reviewer.page.click("#next-item")
    expect(reviewer.page.locator("#decision")).to_contain_text("You hold this review")
    # The heartbeat, as the page's script sends it (a fetch with the CSRF header).
    with reviewer.page.expect_response(lambda r: "/lease/" in r.url) as beat:
        reviewer.page.evaluate("""() => fetch(document.querySelector("[data-lease-url]").dataset.leaseUrl, {method: "POST",
            headers: {"X-CSRFToken": document.querySelector("input[name=csrfmiddlewaretoken]").value}})""")
    assert beat.value.status == 200
    reviewer.assert_clean()
    reviewer.context.close()


def test_the_submitters_pages_load_under_the_csp_without_violations(transactional_db, demo, live_server, browser):  # noqa: F811
    """Issue 8's pages: the plain status with the way on (a failed request), the prefilled new
    request, the wizard with its length counter (static/js/submit.js), the list and home."""
    try:
        failed = services.submission_create(version=demo.version("customer-reply"), user=demo.users["submitter"],
                                            data=dict(CUSTOMER_REPLY_INPUT))
        services.generation_claim(submission_id=failed.pk)
        services.generation_fail(submission_id=failed.pk, attempt=1, kind="provider_unavailable", reason="503")
    finally:
        connection.close()
    submitter = Watched(browser, live_server.url)
    submitter.login("submitter")
    submitter.goto(f"/submissions/{failed.pk}/")
    expect(submitter.page.locator("#submission-state")).to_have_text("Could not be drafted")
    submitter.page.click("#start-again")
    expect(submitter.page.locator("#prefilled-notice")).to_be_visible()
    # The counter and the warning are made by submit.js, with no inline style.
    submitter.page.fill("#id_customer_name", "A" * 250)
    expect(submitter.page.locator("#id_customer_name_field-warning")).to_contain_text("the most it can take is 200")
    submitter.page.click("button[value=next]")
    expect(submitter.page.locator("#id_customer_name_error")).to_contain_text("Nothing was cut")
    submitter.goto("/submissions/")
    submitter.goto("/")
    submitter.assert_clean()
    submitter.context.close()
