"""The reviewer sees, in a real browser, which field the model was unsure of and why the draft
took its lane. Debian's chromium, driven by Playwright; the screenshot is looked at by hand."""
import re

import pytest
from django.db import connection
from playwright.sync_api import expect

from tests.e2e.test_review_loop import _login, _shot, browser  # noqa: F401  (fixture)
from tests.integration.conftest import submit, wait_routed

pytestmark = pytest.mark.e2e


def test_the_unsure_field_is_highlighted_with_the_score_components(worker, fake_model, demo, live_server, browser):  # noqa: F811
    data = {"customer_name": "Ann Example", "customer_email": "ann@example.com", "channel": "email",
            "complaint": "The parcel arrived broken. [[uncertain:reply]] [[lane:auto]] [[invalid-once]]",
            "order_value": "42.50", "refund_offered": True}
    try:
        submission = wait_routed(submit(demo, data).pk)
        task_id = submission.review_tasks.get().pk
    finally:
        connection.close()

    page = _login(browser, live_server.url, "reviewer")
    page.goto(f"{live_server.url}/review/{task_id}/")
    # Why this lane, with the numbers: certainty from the values' token probabilities.
    components = page.locator("dl.components")
    expect(components).to_contain_text("Why this lane")
    expect(components).to_contain_text(re.compile(r"score 0\.\d\d < block_below 0\.60"))
    expect(components).to_contain_text("token probabilities")
    # The certainty table names the unsure field first, and the draft marks it.
    expect(page.locator("#field-certainty tbody tr").first).to_contain_text("Reply")
    expect(page.locator("#field-certainty tr.low-certainty")).to_have_count(1)
    expect(page.locator(".draft-fields .low-certainty").first).to_be_visible()
    expect(page.locator(".draft-fields .low-certainty").first).to_contain_text("less sure")
    # The repaired first answer and the calls are one click away.
    expect(page.locator("#earlier-attempts")).to_contain_text("First answer")
    page.locator("#model-calls summary").click()
    expect(page.locator("#model-calls")).to_contain_text("repair")
    _shot(page, "8-review-low-certainty-field")
    page.context.close()
