"""Compliance filters the audit trail, downloads a CSV export and its manifest in a real
browser, and the pair passes tools/verify_export.py. Debian's chromium, driven by Playwright."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
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
