"""Compliance filters the audit trail, downloads a CSV export and its manifest in a real
browser, and the pair passes tools/verify_export.py. Debian's chromium, driven by Playwright."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection, transaction
from playwright.sync_api import expect

from tests.e2e.test_review_loop import _login, _shot, browser  # noqa: F401  (fixture)
from workflows import audit
from workflows.models import AuditEvent

pytestmark = pytest.mark.e2e
VERIFY = Path(__file__).resolve().parents[2] / "tools" / "verify_export.py"


def test_compliance_filters_exports_and_the_download_verifies(transactional_db, demo, live_server, browser,  # noqa: F811
                                                              tmp_path):
    audit.record_standalone(action="review.approved", object_type="reviewtask", object_id="41",
                            payload={"note": "=HYPERLINK(\"http://x\")", "city": "Zürich"})
    audit.record_standalone(action="review.approved", object_type="reviewtask", object_id="42",
                            payload={"note": "+1 @team"})
    audit.record_standalone(action="review.rejected", object_type="reviewtask", object_id="43", payload={})
    audit.chain_now()  # what the chainer does within a second of each commit (migration 0012)
    try:
        page = _login(browser, live_server.url, "compliance")
        page.click("text=Audit trail")
        page.fill("#action", "review.approved")
        page.click("button:has-text('Filter')")
        expect(page).to_have_url(re.compile(r"action=review.approved"))
        expect(page.locator("#export-count")).to_contain_text("2 events match these filters")
        expect(page.locator("table.audit tbody code")).to_have_count(2)
        _shot(page, "audit-export-1-filtered")

        with page.expect_download() as download:
            page.click("#export-csv")
        csv_path = tmp_path / download.value.suggested_filename
        download.value.save_as(csv_path)
        with page.expect_download() as download:
            page.click("#export-csv-manifest")
        manifest_path = tmp_path / download.value.suggested_filename
        download.value.save_as(manifest_path)
        assert manifest_path.name == f"{csv_path.name}.manifest.json"
        text = csv_path.read_text(encoding="utf-8")
        assert "'=HYPERLINK" not in text  # inside the JSON payload cell, which starts with {
        assert text.count("\n") == 3  # header + 2 rows

        result = subprocess.run([sys.executable, str(VERIFY), str(csv_path), str(manifest_path)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("OK ") and "2 rows" in result.stdout

        # The export is in the trail now.
        page.fill("#action", "audit.exported")
        page.click("button:has-text('Filter')")
        expect(page.locator("table.audit tbody code")).to_have_count(1)
        _shot(page, "audit-export-2-recorded")
        page.context.close()
        event = AuditEvent.objects.get(action="audit.exported")
        assert event.payload["row_count"] == 2 and event.payload["complete"] is True
    finally:
        connection.close()


def test_compliance_prepares_a_big_export_as_a_job_watches_it_and_downloads(worker, demo, live_server, browser,  # noqa: F811
                                                                            settings, tmp_path):
    """Above the streaming line the page offers a background job: the worker writes the file,
    the job list shows its progress (a <progress> bar, polled), then the download links."""
    from tests.bench.bench_export import insert_chain

    settings.REVIEWDESK_EXPORT_DIR = worker.export_dir  # where the worker writes
    settings.REVIEWDESK_EXPORT_STREAM_MAX_ROWS = 1_000
    with connection.cursor() as cursor, transaction.atomic():
        insert_chain(cursor.cursor, 60_000)
    # The fixtures' few events were still waiting when insert_chain took the chain lock (the
    # chainer their commits woke found it held and left them): linked here, not left to the
    # worker's next wake-up racing the browser (a CI run created the job before it came).
    audit.chain_now()
    total = AuditEvent.objects.count()
    try:
        page = _login(browser, live_server.url, "compliance")
        page.click("text=Audit trail")
        expect(page.locator("#export-too-big")).to_be_visible()
        expect(page.locator("#export-csv")).to_have_count(0)  # not offered above the line
        page.click("#job-jsonl")
        row = page.locator("table.export-job-table tbody tr").first
        expect(row.locator("progress")).to_be_visible()
        expect(row).to_contain_text(f"/ {total} events")
        _shot(page, "audit-export-3-job-progress")
        download_link = page.locator("a[id$='-file']").first
        expect(download_link).to_be_visible(timeout=120_000)
        expect(row.locator("progress")).to_have_attribute("value", str(total))
        _shot(page, "audit-export-4-job-done")

        with page.expect_download() as download:
            download_link.click()
        data_path = tmp_path / download.value.suggested_filename
        download.value.save_as(data_path)
        with page.expect_download() as download:
            page.locator("a[id$='-manifest']").first.click()
        manifest_path = tmp_path / download.value.suggested_filename
        download.value.save_as(manifest_path)
        assert manifest_path.name == f"{data_path.name}.manifest.json" and data_path.suffix == ".jsonl"
        result = subprocess.run([sys.executable, str(VERIFY), str(data_path), str(manifest_path)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{total} rows" in result.stdout and "unfiltered" in result.stdout
        page.context.close()
        assert AuditEvent.objects.filter(action="audit.export_downloaded").count() == 2
        assert AuditEvent.objects.get(action="audit.exported").payload["channel"] == "job"
    finally:
        connection.close()
