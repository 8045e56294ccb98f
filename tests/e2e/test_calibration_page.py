"""The workflow admin reads the calibration page in a real browser: the recommendation, both
charts drawn (Chart.js from static/, no CDN) and their numbers one click away. Debian's
chromium, driven by Playwright; the screenshot is looked at."""
import hashlib

import numpy as np
import pytest
from django.db import connection
from playwright.sync_api import expect

from tests.e2e.test_review_loop import _login, _shot, browser  # noqa: F401  (fixture)
from workflows.labels import Label
from workflows.models import Decision, Draft, Lane, ReviewState, ReviewTask, Submission, SubmissionState

pytestmark = pytest.mark.e2e


def labelled_history(version, user, *, n=1500, seed=6):
    """n decided drafts whose scores relate to reviewers' changes as LLM scores tend to (a
    logistic curve), written in bulk: the page reads decisions, not how they were made."""
    rng = np.random.default_rng(seed)
    scores = rng.beta(5, 2, n)
    bad = rng.random(n) < 1 / (1 + np.exp(15 * (scores - 0.6)))
    submissions = Submission.objects.bulk_create(
        Submission(workflow_version=version, submitted_by=user, data={}, state=SubmissionState.APPROVED) for _ in range(n)
    )
    drafts = Draft.objects.bulk_create(
        Draft(submission=s, attempt=1, engine="openai", model="gpt-4o-mini", content="{}", score=float(score),
              lane=Lane.AUTO_APPROVE if score >= 0.9 else Lane.ASYNC_REVIEW if score >= 0.6 else Lane.BLOCKING_REVIEW,
              content_hash=hashlib.sha256(b"{}").hexdigest())
        for s, score in zip(submissions, scores)
    )
    ReviewTask.objects.bulk_create(
        ReviewTask(submission=d.submission, draft=d, lane=d.lane, state=ReviewState.DONE,
                   decision=Decision.REJECT if b else Decision.APPROVE,
                   label=Label.REJECTED if b else Label.UNCHANGED, edit_distance=None if b else 0.0)
        for d, b in zip(drafts, bad)
    )


def test_the_admin_reads_the_recommendation_and_both_charts(transactional_db, demo, live_server, browser):  # noqa: F811
    try:
        labelled_history(demo.version("customer-reply"), demo.users["submitter"])
    finally:
        connection.close()  # left open, it keeps the run from dropping its database

    page = _login(browser, live_server.url, "wfadmin")
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.click("nav >> text=Calibration")
    page.click("text=Customer reply")
    page.fill("#id_alpha", "5")
    page.click("#calibration-form button[type=submit]")
    expect(page.locator("#recommendation-sentence")).to_contain_text("auto-approved; escape rate <=")
    expect(page.locator("#recommendation-sentence")).to_contain_text("1500 labelled drafts")
    expect(page.locator("#labelled-count")).to_have_text("1500")
    # Both charts are drawn: a canvas each, with a real size.
    for chart in ("#reliability-chart canvas", "#risk-coverage-chart canvas"):
        expect(page.locator(chart)).to_be_visible()
        box = page.locator(chart).bounding_box()
        assert box["width"] > 200 and box["height"] > 200
    # The numbers behind each chart are one click away.
    page.locator("#reliability-chart + details summary").click()
    expect(page.locator("#reliability-table tbody tr")).to_have_count(10)
    page.locator("#risk-coverage-chart + details summary").click()
    expect(page.locator("#curve-csv")).to_be_visible()
    expect(page.locator("#what-if-table")).to_contain_text("recommended")
    assert errors == []
    _shot(page, "9-calibration")
    page.context.close()
