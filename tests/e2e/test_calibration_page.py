"""The workflow admin reads the calibration page in a real browser: the recommendation, both
charts drawn (Chart.js from static/, no CDN) and their numbers one click away. Debian's
chromium, driven by Playwright; the screenshot is looked at."""
import numpy as np
import pytest
from django.db import connection
from playwright.sync_api import expect

from tests.e2e.test_review_loop import _login, _shot, browser  # noqa: F401  (fixture)
from tests.labelled import labelled_history
from workflows.labels import Label

pytestmark = pytest.mark.e2e


def test_the_admin_reads_the_recommendation_and_both_charts(transactional_db, demo, live_server, browser):  # noqa: F811
    try:
        rng = np.random.default_rng(6)
        scores = rng.beta(5, 2, 1500)
        # Scores relate to reviewers' changes as LLM scores tend to: a logistic curve.
        bad = rng.random(1500) < 1 / (1 + np.exp(15 * (scores - 0.6)))
        labelled_history(demo.version("customer-reply"), demo.users["submitter"], scores,
                         [Label.REJECTED if b else Label.UNCHANGED for b in bad])
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
    expect(page.locator("#lane-mix-chart canvas")).to_be_visible()
    page.locator("#lane-mix-chart + details summary").click()
    expect(page.locator("#lane-mix-table tbody tr").first).to_contain_text("1")
    assert errors == []
    _shot(page, "9-calibration")
    page.context.close()
