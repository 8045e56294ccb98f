"""The workflow admin imports a dataset, runs an eval on the real workers and watches it finish,
in a real browser (Debian chromium through Playwright). The screenshots are looked at."""
import pytest
from playwright.sync_api import expect

from tests.e2e.test_review_loop import _login, _shot, browser  # noqa: F401  (fixture)
from tests.integration.test_evals import twenty_cases

pytestmark = pytest.mark.e2e


def test_import_run_and_read_an_eval(worker, fake_model, demo, live_server, browser, tmp_path):  # noqa: F811
    cases = tmp_path / "cases.jsonl"
    cases.write_text(twenty_cases())
    page = _login(browser, live_server.url, "wfadmin")
    page.click("nav >> text=Evals")
    page.click("text=Customer reply")
    page.fill("#id_dataset", "regressions")
    page.set_input_files("#id_file", str(cases))
    page.click("#import-form button[type=submit]")
    expect(page.locator(".msg-success")).to_contain_text("20 cases added")
    expect(page.locator("#cases tbody tr")).to_have_count(20)
    _shot(page, "10-eval-dataset")

    page.click("text=Back to the evals of Customer reply")
    page.select_option("#id_dataset_run", "regressions")
    page.click("#run-form button[type=submit]")
    # Live progress until the last case is in (htmx polls the progress partial).
    expect(page.locator("#progress h2")).to_have_text("Done: 20 cases", timeout=90_000)
    expect(page.locator("#pass-rate")).to_have_text("85%")
    expect(page.locator("#results tbody tr.failed")).to_have_count(3)
    expect(page.locator("#results tbody tr").first).to_contain_text("fail")
    _shot(page, "11-eval-run")
    page.context.close()
