"""Notifications and the SLA in a real browser (issue 8): an e-mail's link opened signed out goes
through the log-in page to the item; the queue shows overdue and escalated reviews with their
badges. Debian's chromium, driven by Playwright; the screenshots are looked at."""
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.contrib.auth.models import Group
from django.core import mail
from django.db import connection, transaction
from django.utils import timezone
from playwright.sync_api import expect

from tests.conftest import CUSTOMER_REPLY_INPUT
from tests.e2e.test_review_loop import PASSWORD, _shot, browser  # noqa: F401  (fixture)
from tests.scripted import scripted_result
from workflows import services, tasks
from workflows.definitions import parse_definition
from workflows.models import ReviewTask

pytestmark = pytest.mark.e2e
DEMO_WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows" / "demo_workflows"


def _blocking(version, user):
    # Created and claimed in one transaction: a worker started by an earlier test may be consuming
    # this run's queue and must find the submission claimed (as in test_csp.py).
    with transaction.atomic():
        submission = services.submission_create(version=version, user=user, data=dict(CUSTOMER_REPLY_INPUT))
        claimed = services.generation_claim(submission_id=submission.pk)
    result = scripted_result(version.spec, submission.data, probability=0.30,
                             content=json.dumps({"reply": "Dear Ann, sorry.", "tone": "neutral"}))
    services.draft_record(submission_id=submission.pk, attempt=claimed.attempts, result=result, audit_draw=0.999)
    return ReviewTask.objects.get(submission=submission)


def test_a_mailed_link_opens_the_review_after_login_and_the_queue_shows_sla_badges(
        transactional_db, demo, live_server, browser, settings, make_user):  # noqa: F811
    settings.REVIEWDESK_SITE_URL = live_server.url
    try:
        definition = yaml.safe_load((DEMO_WORKFLOWS / "customer-reply.yaml").read_text())
        definition["slug"] = "escalating-reply"
        definition["name"] = "Escalating reply"
        definition["reviewer_groups"] = ["support-reviewers"]
        definition["routing"].update(escalation_group="support-reviewers-leads",
                                     escalate_after_minutes={"blocking_review": 60})
        version, _ = services.workflow_publish(spec=parse_definition(definition))
        reviewer = demo.users["reviewer"]
        reviewer.groups.add(Group.objects.get(name="support-reviewers-leads"))
        overdue = _blocking(demo.version("customer-reply"), demo.users["submitter"])
        escalated = _blocking(version, demo.users["submitter"])
        fresh = _blocking(demo.version("customer-reply"), demo.users["submitter"])
        ReviewTask.objects.filter(pk=overdue.pk).update(due_at=timezone.now() - timedelta(minutes=3))
        ReviewTask.objects.filter(pk=escalated.pk).update(created_at=timezone.now() - timedelta(minutes=61),
                                                           due_at=timezone.now() - timedelta(minutes=31))
        outcome = tasks.check_review_sla()
        assert outcome["overdue"] == 2 and outcome["escalated"] == 1
        overdue_mail = next(m for m in mail.outbox if m.to == [reviewer.email] and "past their due time" in m.subject)
        link = re.search(rf"{re.escape(live_server.url)}(/review/{overdue.pk}/)", overdue_mail.body).group(0)
    finally:
        connection.close()  # as in the other browser tests: left open, it keeps the run from dropping its database

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(link)  # signed out: the log-in page, which remembers where to go
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/review/\d+/"))
    page.fill("#id_username", "reviewer")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{live_server.url}/review/{overdue.pk}/")
    expect(page.locator("h1")).to_contain_text(f"#{overdue.submission_id}")

    page.goto(f"{live_server.url}/review/")
    rows = page.locator("#queue tbody tr")
    expect(rows.filter(has_text=f"#{overdue.submission_id}").locator(".badge-overdue")).to_have_text("overdue")
    expect(rows.filter(has_text=f"#{escalated.submission_id}").locator(".badge-escalated")).to_have_text("escalated")
    expect(rows.filter(has_text=f"#{fresh.submission_id}").locator(".badge-overdue, .badge-escalated")).to_have_count(0)
    _shot(page, "review-queue-sla-badges")
    context.close()
