"""The cost, latency and reviewer pages in a real browser, drawn by the vendored Chart.js from
their JSON blocks, with each chart's numbers one click away."""
from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone
from playwright.sync_api import expect

from tests.conftest import CUSTOMER_REPLY_INPUT
from tests.e2e.test_review_loop import _login, _shot, browser  # noqa: F401 - the browser fixture
from tests.scripted import scripted_result
from workflows import services
from workflows.models import Draft, LLMCall, ReviewTask, Submission

pytestmark = pytest.mark.e2e

LANES = {"auto_approve": 0.99, "async_review": 0.80, "blocking_review": 0.30}
MODELS = [("gpt-4o-mini", "draft", "0.00040"), ("gpt-4o-mini", "qa", "0.00012"), ("gpt-4o", "cascade", "0.00450")]


def _history(demo):
    """Two weeks of submissions: drafts in every lane, model calls on two models with their
    latencies, and reviewer decisions (approve, edit), spread over the days."""
    rng = random.Random(9)
    now = timezone.now()
    version = demo.version("customer-reply")
    reviewer = demo.users["reviewer"]
    for i in range(24):
        lane = list(LANES)[i % 3]
        # Saved directly, not through submission_create: this test commits, and the session's
        # worker (started by an earlier test) would otherwise take the generation task first.
        submission = Submission.objects.create(workflow_version=version, submitted_by=demo.users["submitter"],
                                               data=dict(CUSTOMER_REPLY_INPUT))
        claimed = services.generation_claim(submission_id=submission.pk)
        result = scripted_result(version.spec, submission.data, probability=LANES[lane],
                                 content={"reply": "Dear Ann, we are sorry.", "tone": "apologetic"})
        draft = services.draft_record(submission_id=submission.pk, attempt=claimed.attempts, result=result,
                                      audit_draw=0.999)
        when = now - timedelta(days=i % 12, hours=rng.randint(0, 6))
        for model, purpose, cost in MODELS[: 2 + (lane == "blocking_review")]:
            LLMCall.objects.create(submission=submission, attempt=1, engine="openai", model=model, purpose=purpose,
                                   ok=True, prompt_tokens=400, completion_tokens=120, cost_usd=Decimal(cost),
                                   latency_ms=rng.randint(600, 4000), created_at=when)
        released = when + timedelta(seconds=rng.uniform(1.5, 7.0)) if lane != "blocking_review" else None
        Submission.objects.filter(pk=submission.pk).update(created_at=when, released_at=released)
        Draft.objects.filter(pk=draft.pk).update(created_at=when)
        if lane == "blocking_review":
            task = ReviewTask.objects.get(draft=draft)
            ReviewTask.objects.filter(pk=task.pk).update(created_at=when, due_at=when + timedelta(minutes=30))
            services.review_claim(task_id=task.pk, user=reviewer)
            edit = '{"reply": "Dear Ann, we are very sorry.", "tone": "apologetic"}' if i % 2 else None
            services.review_approve(task_id=task.pk, user=reviewer, edited_output=edit)
            ReviewTask.objects.filter(pk=task.pk).update(decided_at=when + timedelta(minutes=rng.randint(3, 50)))


def _charts_drawn(page, count: int):
    page.wait_for_function(f"() => window.Chart && Object.keys(Chart.instances).length >= {count}")


def test_cost_latency_and_reviewer_pages(demo, live_server, browser):  # noqa: F811
    try:
        _history(demo)
        page = _login(browser, live_server.url, "wfadmin")
        page.click("nav >> text=Costs")
        expect(page.locator("h1")).to_contain_text("Costs")
        _charts_drawn(page, 4)
        expect(page.locator("#cost-by-day canvas")).to_be_visible()
        # The numbers behind a chart, one click away.
        numbers = page.locator("#cost-by-model details.numbers")
        numbers.locator("summary").click()
        expect(numbers.locator("td", has_text="gpt-4o-mini")).to_be_visible()
        expect(page.locator("#cost-by-model a", has_text="Download CSV")).to_have_attribute(
            "href", "/costs/csv/cost-by-model.csv?days=30")
        expect(page.locator("#projection td", has_text="Customer reply")).to_have_count(1)
        expect(page.locator("#interactions tbody tr")).to_have_count(24)
        _shot(page, "costs-1-overview")

        page.click(".subnav >> text=Latency")
        _charts_drawn(page, 2)
        page.locator("#latency details.numbers summary").click()
        row = page.locator("#latency tbody tr", has_text="Customer reply")
        expect(row).to_contain_text("5.0")  # the default target
        _shot(page, "costs-2-latency")

        page.click(".subnav >> text=Reviewers")
        _charts_drawn(page, 2)
        reviewer_row = page.locator("#reviewers tbody tr", has_text="reviewer")
        expect(reviewer_row.locator("td").nth(1)).to_have_text("8")  # decisions
        expect(reviewer_row.locator("td").nth(3)).to_have_text("50.0")  # approved unchanged, %
        _shot(page, "costs-3-reviewers")

        page.click(".subnav >> text=Budgets and alerts")
        page.click("#budgets tr:has-text('Customer reply') >> text=Edit")
        page.fill("#id_monthly_usd", "0.05")
        page.check("#id_hard_stop")
        page.click("button[type=submit]")
        expect(page.locator("#budgets tr", has_text="Customer reply")).to_contain_text("0.05")
        _shot(page, "costs-4-budgets")
        page.context.close()
    finally:
        connection.close()
