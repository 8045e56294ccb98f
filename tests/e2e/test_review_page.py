"""The review page in a real browser (issue 8, section 2): next item -> edit a field of the
structured editor -> preview the diff -> approve; reject with a reason; send back with
feedback; three items reviewed with the keyboard alone; the `?` help. Debian's chromium through
Playwright; the screenshots (desktop and 390 px wide) are looked at by hand."""
import json
import re

import pytest
from django.db import connection, transaction
from playwright.sync_api import expect

from tests.conftest import CUSTOMER_REPLY_INPUT
from tests.e2e.test_review_loop import PASSWORD, SCREENSHOTS, _shot, browser  # noqa: F401  (fixture)
from tests.scripted import scripted_result
from workflows import services
from workflows.models import Decision, ReviewTask

pytestmark = pytest.mark.e2e

DRAFT = {"reply": "Dear Ann, we are sorry the parcel arrived broken. We will look into it.", "tone": "neutral"}
NEW_REPLY = "Dear Ann, we are sorry the parcel arrived broken. A replacement ships today."


def _blocking_reviews(demo, n):
    """``n`` drafts held for blocking review (scripted, no worker), oldest first."""
    tasks = []
    for _ in range(n):
        with transaction.atomic():
            submission = services.submission_create(version=demo.version("customer-reply"), user=demo.users["submitter"],
                                                    data=dict(CUSTOMER_REPLY_INPUT))
            claimed = services.generation_claim(submission_id=submission.pk)
        result = scripted_result(submission.workflow_version.spec, submission.data, probability=0.30,
                                 content=json.dumps(DRAFT))
        services.draft_record(submission_id=submission.pk, attempt=claimed.attempts, result=result, audit_draw=0.999)
        tasks.append(ReviewTask.objects.open().get(submission=submission))
    return tasks


def _reviewer(chromium, base, width=1280):
    context = chromium.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", "reviewer")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator(".username")).to_have_text("reviewer")
    return page


def _ready(page):
    """Wait until static/js/review.js listens (a deferred script runs after the page is parsed)."""
    expect(page.locator("html[data-shortcuts=on]")).to_have_count(1)


def _decisions(tasks):
    try:
        return sorted(ReviewTask.objects.filter(pk__in=[t.pk for t in tasks]).values_list("decision", flat=True))
    finally:
        connection.close()  # the ORM ran on Playwright's loop thread's connection


def test_next_edit_preview_approve_then_reject_and_send_back(transactional_db, demo, live_server, browser):  # noqa: F811
    try:
        tasks = _blocking_reviews(demo, 3)
    finally:
        connection.close()
    base = live_server.url
    page = _reviewer(browser, base)

    # Next item: claims the most urgent review and opens it, the editor ready.
    page.goto(f"{base}/review/")
    page.click("text=Next item")
    expect(page).to_have_url(re.compile(r"/review/\d+/$"))
    expect(page.locator("#why-lane")).to_have_text(re.compile(r"^Held because the model was unsure"))
    expect(page.locator("#guidelines")).to_contain_text("A refund may be offered")
    expect(page.locator("label[for=ed-reply]")).to_contain_text("Reply")
    expect(page.locator("#ed-reply")).to_have_value(DRAFT["reply"])
    expect(page.locator("#ed-tone")).to_have_value("neutral")
    expect(page.locator("#raw-edit")).not_to_have_attribute("open", "")
    expect(page.locator("#id_edited_output")).to_be_hidden()  # JSON only when asked for
    _shot(page, "review-1-desktop")

    # Edit a field, preview the diff, approve.
    page.fill("#ed-reply", NEW_REPLY)
    page.select_option("#ed-tone", "apologetic")
    page.click("#preview")
    expect(page.locator("#diff-preview .diff-add").first).to_contain_text(NEW_REPLY)
    expect(page.locator("#diff-preview .diff-del")).to_have_count(2)
    expect(page.locator("#ed-reply")).to_have_value(NEW_REPLY)  # the edit is kept
    expect(page.locator("#approve")).to_contain_text("Approve with these changes")
    _shot(page, "review-2-diff-preview")
    page.click("#approve")
    expect(page.locator(".msg-success")).to_contain_text("approved with your edit (changed: Reply, Tone)")

    # Reject with a reason.
    page.click("text=Next item")
    page.select_option("#id_reason_code", "tone")
    page.fill("#id_reason_text", "Too curt for a broken parcel.")
    page.click("#reject")
    expect(page.locator(".msg-success")).to_contain_text("rejected")

    # Send back with feedback.
    page.click("text=Next item")
    page.fill("#id_feedback", "Offer a replacement.")
    page.click("#regenerate")
    expect(page.locator(".msg-success")).to_contain_text("sent back for a new draft")
    page.context.close()
    assert _decisions(tasks) == sorted([Decision.EDIT, Decision.REJECT, Decision.REGENERATE])
    try:
        edited = ReviewTask.objects.get(decision=Decision.EDIT, pk__in=[t.pk for t in tasks])
        assert json.loads(edited.edited_output) == {"reply": NEW_REPLY, "tone": "apologetic"}
    finally:
        connection.close()


def test_three_items_reviewed_with_the_keyboard_only(transactional_db, demo, live_server, browser):  # noqa: F811
    try:
        tasks = _blocking_reviews(demo, 3)
    finally:
        connection.close()
    base = live_server.url
    page = _reviewer(browser, base)
    page.goto(f"{base}/review/?lane=blocking_review")
    _ready(page)
    keys = page.keyboard

    # 1: n, then a: approved as it is.
    keys.press("n")
    expect(page).to_have_url(re.compile(r"/review/\d+/$"))
    expect(page.locator("#approve")).to_be_visible()
    _ready(page)
    keys.press("e")  # edit: the first field of the draft has the focus
    expect(page.locator("#ed-reply")).to_be_focused()
    keys.type(" Thank you")  # typing "a", "n", "s", "r" in a field is text, not a shortcut
    expect(page).to_have_url(re.compile(r"/review/\d+/$"))
    keys.press("Escape")  # leave the field; shortcuts are live again
    keys.press("a")
    expect(page.locator(".msg-success")).to_contain_text("approved with your edit (changed: Reply)")
    _ready(page)

    # 2: n, then r: the reason, chosen and explained without a mouse, then the button.
    keys.press("n")
    expect(page.locator("#approve")).to_be_visible()
    _ready(page)
    keys.press("r")
    expect(page.locator("#id_reason_code")).to_be_focused()
    keys.press("ArrowDown")  # the first reason: "Inaccurate or wrong facts"
    keys.press("Tab")
    expect(page.locator("#id_reason_text")).to_be_focused()
    keys.type("Not answering the complaint; a rewrite is needed.")
    keys.press("Tab")
    expect(page.locator("#reject")).to_be_focused()
    keys.press("Enter")
    expect(page.locator(".msg-success")).to_contain_text("rejected")
    _ready(page)

    # 3: n, then s: feedback, sent with Ctrl+Enter from the field.
    keys.press("n")
    expect(page.locator("#approve")).to_be_visible()
    _ready(page)
    keys.press("s")
    expect(page.locator("#id_feedback")).to_be_focused()
    keys.type("Say when the replacement arrives.")
    keys.press("Control+Enter")
    expect(page.locator(".msg-success")).to_contain_text("sent back for a new draft")
    _ready(page)

    # Nothing left: n says so.
    keys.press("n")
    expect(page.locator(".msg-info")).to_contain_text("Nothing is waiting for you")
    page.context.close()
    assert _decisions(tasks) == sorted([Decision.EDIT, Decision.REJECT, Decision.REGENERATE])
    try:
        rejected = ReviewTask.objects.get(decision=Decision.REJECT, pk__in=[t.pk for t in tasks])
        assert (rejected.reason_code, rejected.reason_text) == ("inaccurate", "Not answering the complaint; a rewrite is needed.")
    finally:
        connection.close()


def test_the_help_dialog_and_the_narrow_screen(transactional_db, demo, live_server, browser):  # noqa: F811
    try:
        (task,) = _blocking_reviews(demo, 1)
    finally:
        connection.close()
    base = live_server.url
    page = _reviewer(browser, base)
    page.goto(f"{base}/review/{task.pk}/")
    _ready(page)
    expect(page.locator("#shortcuts")).to_be_hidden()
    page.keyboard.press("?")
    dialog = page.locator("#shortcuts")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Next item")
    expect(page.locator("#shortcuts-close")).to_be_focused()
    _shot(page, "review-3-shortcuts-help")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.click("#shortcuts-open")  # the visible button opens it too
    expect(dialog).to_be_visible()
    page.click("#shortcuts-close")
    expect(dialog).to_be_hidden()
    page.context.close()

    # 390 px wide: one column, nothing wider than the screen.
    page = _reviewer(browser, base, width=390)
    page.goto(f"{base}/review/{task.pk}/")
    page.click("#claim")
    expect(page.locator("#ed-reply")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    _shot(page, "review-4-390px")
    page.locator("#decision").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "review-5-390px-editor.png"))  # the screen as seen, not the whole page
    page.context.close()
