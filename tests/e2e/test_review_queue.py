"""The review queue in a real browser (issue 8): two reviewers pressing Next at once get
different items; a decision on an expired lease is refused and the edit is kept; bulk confirm
of the async lane; a live count that moves when an item arrives, without a reload. Screenshots
of the queue at desktop and 390 px wide: tests/e2e/screenshots/queue-*.png.
"""
import json
import re
import threading

import pytest
from django.db import connection, transaction
from playwright.sync_api import expect

from tests.conftest import CUSTOMER_REPLY_INPUT
from tests.e2e.test_review_loop import PASSWORD, _shot, browser  # noqa: F401  (fixture)
from tests.scripted import scripted_result
from workflows import services

pytestmark = pytest.mark.e2e

REPLY = json.dumps({"reply": "Dear customer, we are sorry about the parcel.", "tone": "apologetic"})
EDITED_REPLY = "Dear Ann, a replacement ships today. Edited in the browser."
PROBABILITY = {"blocking_review": 0.30, "async_review": 0.75}


def _off_the_loop(fn):
    """Run ORM work in its own thread: Playwright's sync API keeps an event loop running in this
    one, where Django refuses synchronous database calls."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return box.get("value")


def _routed(demo, lane, n=1, findings=False):
    version, submitter = demo.version("customer-reply"), demo.users["submitter"]
    made = []
    with transaction.atomic():
        for _ in range(n):
            submission = services.submission_create(version=version, user=submitter, data=dict(CUSTOMER_REPLY_INPUT))
            claimed = services.generation_claim(submission_id=submission.pk)
            result = scripted_result(version.spec, submission.data, probability=PROBABILITY[lane], content=REPLY)
            draft = services.draft_record(submission_id=submission.pk, attempt=claimed.attempts, result=result,
                                          audit_draw=0.999)
            assert draft.lane == lane
            task = submission.review_tasks.get()
            if findings:
                type(task).objects.filter(pk=task.pk).update(finding_codes=" guardrail ")
            made.append(task.pk)
    return made


@pytest.fixture
def queue(demo, transactional_db):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    second = get_user_model().objects.create_user(username="reviewer2", password=PASSWORD)
    second.groups.set([Group.objects.get(name="reviewer"), Group.objects.get(name="support-reviewers")])
    made = {"blocking": _routed(demo, "blocking_review", 4), "async": _routed(demo, "async_review", 3),
            "flagged": _routed(demo, "async_review", 1, findings=True)}
    connection.close()
    return made


def _login(browser, base, username, width=1280):  # noqa: F811
    page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator(".username")).to_have_text(username)
    return page


def test_two_reviewers_pressing_next_at_once_get_different_items(queue, live_server, browser):  # noqa: F811
    base = live_server.url
    one, two = _login(browser, base, "reviewer"), _login(browser, base, "reviewer2")
    for page in (one, two):
        page.goto(f"{base}/review/?lane=blocking_review")
    # Both presses are sent before either answer is read.
    one.click("#next-item", no_wait_after=True)
    two.click("#next-item", no_wait_after=True)
    for page in (one, two):
        expect(page).to_have_url(re.compile(r"/review/\d+/$"))
        expect(page.locator("#decision")).to_contain_text("You hold this review")
    got = {int(re.search(r"/review/(\d+)/", p.url).group(1)) for p in (one, two)}
    assert len(got) == 2 and got <= set(queue["blocking"])
    # The other's item shows who holds it, with no way to open it for a decision.
    one.goto(f"{base}/review/?lane=blocking_review")
    theirs = int(re.search(r"/review/(\d+)/", two.url).group(1))
    row = one.locator(f'tr[data-task="{theirs}"]')
    expect(row).to_contain_text("Held by reviewer2 until")
    expect(row.locator("a")).to_have_text("View")
    _shot(one, "queue-held-by-another")
    one.context.close()
    two.context.close()


def test_an_expired_lease_refuses_the_decision_and_keeps_the_edit(queue, live_server, browser):  # noqa: F811
    from workflows.models import ReviewTask

    base = live_server.url
    page = _login(browser, base, "reviewer")
    page.goto(f"{base}/review/?lane=blocking_review")
    page.click("#next-item")
    expect(page).to_have_url(re.compile(r"/review/\d+/$"))
    pk = int(re.search(r"/review/(\d+)/", page.url).group(1))
    page.fill("#ed-reply", EDITED_REPLY)  # the structured editor
    _off_the_loop(lambda: ReviewTask.objects.filter(pk=pk).update(lease_expires_at=_past()))
    page.click("#approve")
    expect(page.locator("#decision .error")).to_have_text("Claim this review first; your lease may have expired.")
    expect(page.locator("#carried-edit")).to_be_visible()
    page.click("#claim")  # claim again: the edit comes back into the editor
    expect(page.locator("#ed-reply")).to_have_value(EDITED_REPLY)
    _shot(page, "queue-lease-expired-edit-kept")

    # Now the lease runs out and another reviewer takes the item: the refusal names them, no
    # claim is offered, and the words are on the page to copy. Nothing was saved.
    def taken():
        from django.contrib.auth import get_user_model

        ReviewTask.objects.filter(pk=pk).update(lease_expires_at=_past())
        services.review_claim(task_id=pk, user=get_user_model().objects.get(username="reviewer2"))

    _off_the_loop(taken)
    page.click("#approve")
    expect(page.locator("#held-by")).to_contain_text("Claimed by reviewer2")
    expect(page.locator("#claim")).to_have_count(0)
    expect(page.locator("#carried-edit-text")).to_have_value(re.compile(re.escape(EDITED_REPLY)))
    task = _off_the_loop(lambda: ReviewTask.objects.get(pk=pk))
    assert task.is_open and task.claimed_by.username == "reviewer2" and task.decision == ""
    page.context.close()


def _past():
    from datetime import timedelta

    from django.utils import timezone

    return timezone.now() - timedelta(seconds=1)


def test_bulk_confirm_in_the_async_lane(queue, live_server, browser):  # noqa: F811
    base = live_server.url
    page = _login(browser, base, "reviewer")
    page.goto(f"{base}/review/?lane=async_review")
    expect(page.locator("input[name=task]")).to_have_count(3)  # not the one with a finding
    page.check("#select-all")
    for box in page.locator("input[name=task]").all():
        expect(box).to_be_checked()
    page.locator("input[name=task]").first.uncheck()
    page.click("#bulk-selected")
    expect(page.locator("#bulk-question")).to_have_text("Confirm 2 released drafts as reviewed?")
    _shot(page, "queue-bulk-confirm-step")
    page.click("#bulk-confirm-button")
    expect(page.locator(".msg-success")).to_contain_text("Confirmed 2 released drafts as reviewed")
    expect(page.locator("input[name=task]")).to_have_count(1)
    expect(page.locator('.count[data-lane="async_review"]')).to_have_text("2")  # one left + the flagged one
    page.context.close()


def test_the_live_count_moves_when_an_item_arrives(queue, live_server, browser, demo):  # noqa: F811
    base = live_server.url
    page = _login(browser, base, "reviewer")
    page.goto(f"{base}/review/?lane=blocking_review")
    count = page.locator('.count[data-lane="blocking_review"]')
    expect(count).to_have_text("4")
    page.evaluate("window.__notReloaded = true")
    _shot(page, "queue-desktop")
    _off_the_loop(lambda: _routed(demo, "blocking_review", 1))
    expect(count).to_have_text("5", timeout=25_000)  # the 15 s poll, no reload
    expect(page.locator("#queue-fresh")).to_contain_text("The queue changed since this list was shown: 5 now.")
    assert page.evaluate("window.__notReloaded") is True
    page.click("#queue-refresh")
    expect(page.locator("#queue tbody tr")).to_have_count(5)
    page.context.close()

    narrow = _login(browser, base, "reviewer", width=390)
    narrow.goto(f"{base}/review/?lane=async_review")
    expect(narrow.locator("#queue")).to_be_visible()
    _shot(narrow, "queue-390px")
    narrow.goto(f"{base}/review/?lane=blocking_review")
    _shot(narrow, "queue-390px-blocking")
    narrow.context.close()


def test_the_heartbeat_renews_the_lease_while_active_and_says_when_it_is_lost(queue, live_server, browser):  # noqa: F811
    """static/js/app.js renews every 60 s while the page is visible and used; coming back to the
    tab (visibilitychange) beats at once, which this test uses instead of waiting a minute."""
    from datetime import timedelta

    from django.utils import timezone

    from workflows.models import ReviewTask

    base = live_server.url
    page = _login(browser, base, "reviewer")
    page.goto(f"{base}/review/?lane=blocking_review")
    page.click("#next-item")
    expect(page).to_have_url(re.compile(r"/review/\d+/$"))
    pk = int(re.search(r"/review/(\d+)/", page.url).group(1))
    _off_the_loop(lambda: ReviewTask.objects.filter(pk=pk).update(lease_expires_at=timezone.now() + timedelta(minutes=1)))
    page.keyboard.press("Shift")  # the reviewer is active
    with page.expect_response(lambda r: r.url.endswith(f"/review/{pk}/lease/")) as beat:
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    assert beat.value.status == 200
    expires = _off_the_loop(lambda: ReviewTask.objects.get(pk=pk).lease_expires_at)
    assert expires > timezone.now() + timedelta(minutes=3), "renewed to about five minutes ahead"
    expect(page.locator("[data-lease-until]")).to_have_text(f"{expires:%H:%M} UTC")

    def taken():
        from django.contrib.auth import get_user_model

        ReviewTask.objects.filter(pk=pk).update(lease_expires_at=_past())
        services.review_claim(task_id=pk, user=get_user_model().objects.get(username="reviewer2"))

    _off_the_loop(taken)
    page.fill("#ed-reply", EDITED_REPLY)  # the structured editor
    with page.expect_response(lambda r: r.url.endswith(f"/review/{pk}/lease/")) as beat:
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    assert beat.value.status == 409
    expect(page.locator("#lease-lost")).to_contain_text("reviewer2 holds this review now")
    expect(page.locator("#ed-reply")).to_have_value(EDITED_REPLY)  # the page keeps the text
    expect(page.locator("#approve")).to_be_disabled()  # no decision offered that would be refused
    expect(page.locator("#reclaim")).to_be_hidden()  # someone else holds it: no claim either
    _shot(page, "queue-heartbeat-lease-lost")
    page.context.close()


def test_an_expired_lease_seen_by_the_heartbeat_offers_to_claim_again_with_the_text(queue, live_server, browser):  # noqa: F811
    from workflows.models import ReviewTask

    base = live_server.url
    page = _login(browser, base, "reviewer")
    page.goto(f"{base}/review/?lane=blocking_review")
    page.click("#next-item")
    expect(page).to_have_url(re.compile(r"/review/\d+/$"))
    pk = int(re.search(r"/review/(\d+)/", page.url).group(1))
    page.fill("#ed-reply", EDITED_REPLY)  # the structured editor
    _off_the_loop(lambda: ReviewTask.objects.filter(pk=pk).update(lease_expires_at=_past()))
    with page.expect_response(lambda r: r.url.endswith(f"/review/{pk}/lease/")) as beat:
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    assert beat.value.status == 409
    expect(page.locator("#lease-lost")).to_contain_text("Your lease on this review has expired")
    expect(page.locator("#approve")).to_be_disabled()
    page.click("#reclaim")
    expect(page.locator("#ed-reply")).to_have_value(EDITED_REPLY)
    expect(page.locator("#approve")).to_be_enabled()
    page.click("#approve")
    expect(page.locator(".msg-success")).to_contain_text("approved with your edit")
    page.context.close()
