"""A workflow admin changes a definition in the browser and takes it through the gate: edit ->
candidate -> dry run -> eval -> publish refused -> override -> roll back (Debian chromium through
Playwright, the real worker, the fake model on loopback). The screenshots are looked at."""
import re

import pytest
from django.db import connection
from playwright.sync_api import expect

from evals import services as evals
from tests.e2e.test_review_loop import _login, _shot, browser  # noqa: F401  (fixture)
from tests.integration.test_publish_gate import dataset_text

pytestmark = pytest.mark.e2e


def _wait_done(page, cases):
    expect(page.locator("#progress h2")).to_have_text(f"Done: {cases} cases", timeout=90_000)


def test_edit_candidate_dry_run_eval_refused_override_rollback(worker, fake_model, demo, live_server, browser):  # noqa: F811
    try:
        workflow = demo.workflows["customer-reply"]
        dataset = evals.dataset_for(workflow)
        evals.cases_import(dataset=dataset, text=dataset_text())
        evals.eval_run_here(workflow.current_version, dataset)  # v1's baseline
    finally:
        connection.close()
    base = live_server.url
    page = _login(browser, base, "wfadmin")
    page.goto(f"{base}/evals/customer-reply/versions/")
    page.click("#edit-current")
    # Edit: the check runs as the admin types, naming the key of a mistake, then the diff.
    source = page.locator("#id_source")
    text = source.input_value()
    source.fill(text.replace("auto_approve_at: 0.90", "auto_approve_at: 7"))
    source.press("End")
    expect(page.locator("#check")).to_contain_text("routing.auto_approve_at")
    source.fill(text.replace("auto_approve_at: 0.90", "auto_approve_at: 0.70"))
    source.press("End")
    expect(page.locator("#check pre.diff")).to_contain_text("+  auto_approve_at: 0.70")
    expect(page.locator("#check")).to_contain_text("Valid definition")
    page.fill("#id_note", "more automation")
    _shot(page, "12-version-editor")
    page.click("#editor-form button[type=submit]")
    expect(page.locator(".msg-success")).to_contain_text("Saved as candidate v2")

    # Dry run one case, then the candidate's eval.
    page.select_option("#case-2", "unsure-0")
    page.locator("#version-2 form.dry-run button").click()
    _wait_done(page, 1)
    page.go_back()
    page.goto(f"{base}/evals/customer-reply/versions/")
    page.locator("#version-2 button.run-eval").click()
    _wait_done(page, 20)
    expect(page.locator("#pass-rate")).to_have_text("50%")

    # Publish: refused by the gate, with the reasons; then published with an override.
    page.goto(f"{base}/evals/customer-reply/versions/")
    page.fill("#reason-2", "more automation")
    page.locator("#version-2 form.publish-form button").click()
    expect(page.locator(".msg-error")).to_contain_text("must not auto-approve would")
    expect(page.locator(".msg-error")).to_contain_text("beyond the margin")
    _shot(page, "13-publish-refused")
    page.fill("#reason-2", "more automation")
    page.fill("#override-2", "One-day trial agreed with compliance.")
    page.locator("#version-2 form.publish-form button").click()
    expect(page.locator(".msg-success")).to_contain_text("v2 is now the current version (gate overridden")
    expect(page.locator("#version-2")).to_contain_text("current")

    # Roll back to v1: a new candidate v3 with v1's definition, measured, then published.
    page.fill("#rollback-1", "trial over")
    page.locator("#version-1 form.publish-form button").click()
    expect(page.locator(".msg-info")).to_contain_text("saved as a new candidate")
    page.locator("#version-3 button.run-eval").click()
    _wait_done(page, 20)
    expect(page.locator("#pass-rate")).to_have_text("100%")
    # Compare v3's run with v2's, regressions first, drawn.
    page.locator("text=(v2,").first.click()
    expect(page.locator("#compare-summary")).to_contain_text("Pass rate 50% → 100%")
    expect(page.locator("#compare-kinds-chart canvas")).to_be_visible()
    expect(page.locator("#compare-rates-chart canvas")).to_be_visible()
    expect(page.locator("#changes tbody tr").first).to_contain_text("fixed")
    _shot(page, "15-eval-compare")
    page.goto(f"{base}/evals/customer-reply/versions/")
    page.fill("#reason-3", "back to v1")
    page.locator("#version-3 form.publish-form button").click()
    expect(page.locator(".msg-success")).to_contain_text("v3 is now the current version.")
    expect(page.locator("#version-3 td").nth(2)).to_have_text(re.compile("rollback to v1"))
    _shot(page, "14-versions-after-rollback")
    page.context.close()
