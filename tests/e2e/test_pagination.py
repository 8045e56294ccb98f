"""Long lists in a real browser: 205 submissions and 205 blocking reviews page through the one
pager, the queue's pages swap in place with htmx and keep their URL, and the counts agree with
what is listed. Screenshots: tests/e2e/screenshots/pagination-*.png.
"""
import json
import os
import re
from pathlib import Path

import pytest
from django.db import connection, transaction
from playwright.sync_api import expect, sync_playwright

from tests.conftest import CUSTOMER_REPLY_INPUT
from tests.scripted import scripted_result
from workflows import services

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).parent / "screenshots"
CHROMIUM = os.environ.get("REVIEWDESK_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "reviewdesk-demo"
REPLY = json.dumps({"reply": "Dear customer, we are sorry about the parcel.", "tone": "apologetic"})


@pytest.fixture
def long_lists(demo, transactional_db):
    """205 submissions by the demo submitter, each drafted and waiting for blocking review.
    Made in one transaction, so a worker left running by another test receives the generation
    tasks only after commit, finds the drafts already made and drops them. Made before the
    browser starts: the ORM is not used inside Playwright's event loop."""
    version = demo.version("customer-reply")
    submitter = demo.users["submitter"]
    with transaction.atomic():
        for _ in range(205):
            submission = services.submission_create(version=version, user=submitter, data=dict(CUSTOMER_REPLY_INPUT))
            claimed = services.generation_claim(submission_id=submission.pk)
            result = scripted_result(version.spec, submission.data, probability=0.30, content=REPLY)
            draft = services.draft_record(submission_id=submission.pk, attempt=claimed.attempts, result=result,
                                          audit_draw=0.999)
            assert draft.lane == "blocking_review"
    connection.close()


@pytest.fixture
def browser(long_lists):
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()


def _login(browser, base_url, username):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator(".username")).to_have_text(username)
    return page


def _shot(page, name):
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_long_lists_page_in_the_browser(live_server, browser):
    base = live_server.url

    page = _login(browser, base, "submitter")
    page.goto(f"{base}/submissions/")
    expect(page.locator(".pager-status")).to_have_text("1–50 of 205 · page 1 of 5")
    expect(page.locator("#submissions tbody tr")).to_have_count(50)
    page.click("a[rel=last]")
    expect(page).to_have_url(re.compile(r"/submissions/\?page=5$"))
    expect(page.locator(".pager-status")).to_have_text("201–205 of 205 · page 5 of 5")
    expect(page.locator("#submissions tbody tr")).to_have_count(5)
    _shot(page, "pagination-submissions-last-page")
    page.context.close()

    page = _login(browser, base, "reviewer")
    page.goto(f"{base}/review/?lane=blocking_review")
    expect(page.locator('.count[data-lane="blocking_review"]')).to_have_text("99+")  # capped: a LIMITed count
    # The queue pages by keyset (a cursor after the last row shown): no page count, no last page.
    expect(page.locator("#queue .pager-status")).to_have_text("1–50 of 99+")
    page.click("#queue a[rel=next]")  # swapped in place by htmx, the URL pushed
    expect(page.locator("#queue .pager-status")).to_have_text("51–100 of 99+")
    expect(page).to_have_url(re.compile(r"/review/\?lane=blocking_review&after=[^&]+&start=51$"))
    expect(page.locator("#queue tbody tr")).to_have_count(50)
    _shot(page, "pagination-review-queue-page-2")
    for status in ("101–150 of 99+", "151–200 of 99+", "201–205 of 99+"):
        page.click("#queue a[rel=next]")
        expect(page.locator("#queue .pager-status")).to_have_text(status)
    expect(page.locator("#queue tbody tr")).to_have_count(5)
    expect(page.locator("#queue a[rel=next]")).to_have_count(0)
    _shot(page, "pagination-review-queue-last-page")
    # Reloading the pushed URL gives the same page as a full page.
    page.reload()
    expect(page.locator("#queue .pager-status")).to_have_text("201–205 of 99+")
    expect(page.locator("#queue tbody tr")).to_have_count(5)
    page.context.close()
