"""Costs, budgets and alerts (issue 9) against PostgreSQL, Redis and the real worker."""
from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone
from pytest_httpserver import HTTPServer

from calibration.maths import upper_bound
from costs import alerts, selectors, tables
from costs import services as cost_services
from costs.budgets import month_start
from costs.models import AlertMetric, AlertNotification, AlertRule, Budget
from costs.tasks import evaluate_costs
from tests.conftest import wait_for
from tests.integration.conftest import submit, unique_marker, wait_routed
from workflows.models import AuditEvent, LLMCall, Submission, SubmissionState
from workflows.pipeline import pricing

PER_MILLION = Decimal(1_000_000)


def _by_hand(call: LLMCall) -> Decimal:
    """A call's cost from the shipped price table, computed here rather than by pricing.cost_of."""
    price = pricing.DEFAULT_PRICES[call.model_reported or call.model]
    uncached = call.prompt_tokens - call.cached_tokens
    total = (uncached * Decimal(price["input"]) + call.cached_tokens * Decimal(price["cached_input"])
             + call.completion_tokens * Decimal(price["output"]))
    return (total / PER_MILLION).quantize(Decimal("0.00000001"))


def test_cost_adds_up_from_the_price_table_across_a_submissions_calls(
        worker, demo, customer_reply_input, publish_variant):
    # A repair (first answer invalid), a cascade (the primary is unsure) and a QA grade on each
    # answer: several calls on two models for one submission, made by the real worker.
    version = publish_variant("customer-reply", "cr-costs", model__fallback=[], model__escalate_to="gpt-4o",
                              qa={"model": "gpt-4o-mini", "rubric": "Polite and correct."})
    customer_reply_input["complaint"] += f" {unique_marker()} [[invalid-once]] [[weak:gpt-4o-mini]]"
    from workflows import services

    submission = services.submission_create(version=version, user=demo.users["submitter"], data=customer_reply_input)
    wait_routed(submission.pk)
    calls = list(LLMCall.objects.filter(submission=submission))
    purposes = {c.purpose for c in calls}
    assert {"draft", "repair", "cascade", "qa"} <= purposes, purposes
    assert {c.model for c in calls} == {"gpt-4o-mini", "gpt-4o"}
    by_hand = sum((_by_hand(c) for c in calls), Decimal(0))
    assert by_hand > 0
    assert all(c.cost_usd == _by_hand(c) for c in calls)
    # The pages add up the same calls: per interaction, per workflow, per model, per day.
    admin = demo.users["wfadmin"]
    since = timezone.now() - timedelta(days=1)
    row = selectors.interactions(admin, since).get(pk=submission.pk)
    assert row.cost == by_hand and row.calls == len(calls)
    assert row.qa_calls == sum(c.purpose == "qa" for c in calls)
    (wf_row,) = [r for r in selectors.cost_by_workflow(admin, since) if r["slug"] == "cr-costs"]
    assert wf_row["cost"] == by_hand.quantize(Decimal("0.000001")) and wf_row["calls"] == len(calls)
    per_model = {r["model"]: r["cost"] for r in selectors.cost_by_model(admin, since)}
    for model in ("gpt-4o-mini", "gpt-4o"):
        assert per_model[model] == sum(_by_hand(c) for c in calls if c.model == model)
    assert sum(r["cost"] for r in selectors.cost_by_day(admin, since) if r["workflow"] == version.workflow.name) == by_hand
    # What a switch of the primary model would have cost: the primary's drafts and repairs
    # re-priced at gpt-4o's prices, everything else unchanged.
    switch = {r["model"]: r for r in selectors.model_switch(version.workflow, "gpt-4o-mini", since)}
    own = [c for c in calls if c.model == "gpt-4o-mini" and c.purpose in ("draft", "repair", "sample")]
    big = pricing.DEFAULT_PRICES["gpt-4o"]
    repriced = sum((c.prompt_tokens * Decimal(big["input"]) + c.completion_tokens * Decimal(big["output"]))
                   / PER_MILLION for c in own)
    expected = by_hand - sum(c.cost_usd for c in own) + repriced
    assert switch["gpt-4o"]["cost"] == expected.quantize(Decimal("0.000001"))


def test_projection_from_the_database_matches_a_hand_computed_case(demo):
    """Every submission of the last 30 days cost 2 cents (two calls of 1 cent), 14 in the last
    week (2 a day): the month ends at spent + 2/day * days left * 0.02 USD, at p50 and p95."""
    workflow = demo.workflows["underwriting-memo"]
    version = demo.version("underwriting-memo")
    now = timezone.now()
    for i in range(14):
        s = Submission.objects.create(workflow_version=version, submitted_by=demo.users["submitter"], data={},
                                      created_at=now - timedelta(hours=12 * i))
        for _ in range(2):
            LLMCall.objects.create(submission=s, attempt=1, engine="openai", model="gpt-4o-mini", ok=True,
                                   prompt_tokens=10, completion_tokens=5, cost_usd=Decimal("0.01"),
                                   created_at=s.created_at)
    (p,) = [p for p in selectors.projections(demo.users["wfadmin"], now=now) if p.workflow == workflow]
    spent = float(sum(c.cost_usd for c in LLMCall.objects.filter(
        submission__workflow_version__workflow=workflow, created_at__gte=month_start(now))))
    next_month = (month_start(now) + timedelta(days=32)).replace(day=1)
    n = round(2 * (next_month - now).total_seconds() / 86400)
    assert p.projection.month_to_date == pytest.approx(spent)
    assert p.projection.daily_submissions == pytest.approx(2.0)
    assert p.projection.at_rate.p50 == pytest.approx(spent + n * 0.02)
    assert p.projection.at_rate.p95 == pytest.approx(spent + n * 0.02)
    assert p.projection.at_10x.p95 == pytest.approx(spent + round(20 * (next_month - now).total_seconds() / 86400) * 0.02)
    assert p.model_mix[0]["model"] == "gpt-4o-mini" and p.model_mix[0]["share"] == pytest.approx(1.0)


# --- budgets --------------------------------------------------------------------------------


def _spend(submission, usd: str, *, when=None) -> LLMCall:
    return LLMCall.objects.create(submission=submission, attempt=1, engine="openai", model="gpt-4o", ok=True,
                                  prompt_tokens=1000, completion_tokens=100, cost_usd=Decimal(usd),
                                  created_at=when or timezone.now())


def _events(action, submission):
    return AuditEvent.objects.filter(action=action, object_type="submission", object_id=str(submission.pk)).count()


def test_budget_hard_stop_pauses_and_resumes_when_raised_without_losing_a_submission(
        worker, demo, customer_reply_input):
    workflow, admin = demo.workflows["customer-reply"], demo.users["wfadmin"]
    customer_reply_input["complaint"] += f" {unique_marker()} [[lane:async]]"
    first = submit(demo, customer_reply_input)
    wait_routed(first.pk)
    _spend(first, "0.50")  # this month's spend is now over the budget below
    cost_services.budget_set(workflow=workflow, monthly_usd=Decimal("0.25"), hard_stop=True, actor=admin)
    assert AuditEvent.objects.filter(action="budget.changed").count() == 1

    held = [submit(demo, customer_reply_input) for _ in range(2)]
    for s in held:
        wait_for(lambda s=s: Submission.objects.get(pk=s.pk).state == SubmissionState.PAUSED,
                 message=f"submission #{s.pk} to be paused")
    # The submitter reads plain words, with no amounts or thresholds.
    client = Client()
    client.force_login(demo.users["submitter"])
    page = client.get(f"/submissions/{held[0].pk}/").content.decode()
    message = re.search(r'<p class="notice" id="paused-message">([^<]*)</p>', page).group(1)
    assert "spending limit for the month" in message and "will be drafted automatically" in message
    assert not re.search(r"\d", message) and "$" not in message
    # The periodic task leaves them alone while the budget is spent.
    assert evaluate_costs()["resumed"] == 0
    assert Submission.objects.get(pk=held[0].pk).state == SubmissionState.PAUSED

    cost_services.budget_set(workflow=workflow, monthly_usd=Decimal("100"), hard_stop=True, actor=admin)
    for s in held:
        done = wait_routed(s.pk)
        assert done.state != SubmissionState.PAUSED and done.drafts.count() == 1 and done.attempts == 1
        assert _events("generation.paused", s) == 1 and _events("generation.resumed", s) == 1
    budget_events = AuditEvent.objects.filter(action="budget.changed").order_by("id")
    assert [e.payload["after"]["monthly_usd"] for e in budget_events] == ["0.25", "100.00"]
    assert budget_events.last().payload["before"] == {"monthly_usd": "0.25", "hard_stop": True}
    assert budget_events.last().actor_id == admin.pk


def test_a_paused_submission_is_drafted_when_the_month_turns(worker, demo, customer_reply_input):
    workflow, admin = demo.workflows["customer-reply"], demo.users["wfadmin"]
    customer_reply_input["complaint"] += f" {unique_marker()} [[lane:auto]]"
    first = submit(demo, customer_reply_input)
    wait_routed(first.pk)
    _spend(first, "2.00")
    cost_services.budget_set(workflow=workflow, monthly_usd=Decimal("1.00"), hard_stop=True, actor=admin)
    held = submit(demo, customer_reply_input)
    wait_for(lambda: Submission.objects.get(pk=held.pk).state == SubmissionState.PAUSED, message="the pause")
    # The month turns: everything spent so far is last month's.
    last_month = month_start() - timedelta(days=1)
    LLMCall.objects.filter(submission__workflow_version__workflow=workflow).update(created_at=last_month)
    assert evaluate_costs()["resumed"] == 1
    assert wait_routed(held.pk).drafts.count() == 1


def test_budget_warning_at_80_percent_once_per_month(demo, django_capture_on_commit_callbacks):
    workflow = demo.workflows["customer-reply"]
    submission = Submission.objects.create(workflow_version=demo.version("customer-reply"),
                                           submitted_by=demo.users["submitter"], data={})
    Budget.objects.create(workflow=workflow, monthly_usd=Decimal("10"))
    _spend(submission, "7.99")
    with django_capture_on_commit_callbacks(execute=True):
        assert cost_services.budget_warnings() == 0
    _spend(submission, "0.01")
    with django_capture_on_commit_callbacks(execute=True):
        assert cost_services.budget_warnings() == 1
        assert cost_services.budget_warnings() == 0
    (message,) = mail.outbox
    assert "wfadmin@example.com" in message.to and "80%" in message.subject
    assert "drafting continues" in message.body
    event = AuditEvent.objects.get(action="budget.warning_sent")
    assert event.payload["spent_usd"] == "8.00" and event.payload["monthly_usd"] == "10.00"


# --- alerts -------------------------------------------------------------------------------------


@pytest.fixture
def webhook():
    """A Slack-compatible receiver on loopback (its own server: the session one serves the model)."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    server.expect_request("/hooks/reviewdesk", method="POST").respond_with_data("ok")
    yield server
    server.clear()
    if server.is_running():
        server.stop()


def test_an_alert_fires_once_per_incident(transactional_db, demo, webhook, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    workflow = demo.workflows["customer-reply"]
    submission = Submission.objects.create(workflow_version=demo.version("customer-reply"),
                                           submitted_by=demo.users["submitter"], data={})
    rule = AlertRule.objects.create(workflow=workflow, metric=AlertMetric.COST_MONTH, threshold=1.0,
                                    cooldown_minutes=30, webhook_url=webhook.url_for("/hooks/reviewdesk"))
    now = timezone.now()
    assert alerts.evaluate_all(now=now) == 0  # nothing spent
    call = _spend(submission, "1.50")
    # The incident starts: one message, however often it is evaluated while it lasts.
    for minute in range(5):
        alerts.evaluate_all(now=now + timedelta(minutes=minute))
    assert len(webhook.log) == 1 and len(mail.outbox) == 1
    request, _ = webhook.log[0]
    text = request.get_json()["text"]
    assert set(request.get_json()) == {"text"} and "Customer reply" in text and "1.5" in text
    assert mail.outbox[0].to == ["wfadmin@example.com"]
    notification = AlertNotification.objects.get()
    assert notification.webhook_status == "HTTP 200"
    assert AuditEvent.objects.filter(action="alert.sent", object_id=str(rule.pk)).count() == 1

    # It clears, and comes back within the cool-down: still the same one message (flapping).
    LLMCall.objects.filter(pk=call.pk).update(created_at=month_start(now) - timedelta(days=1))
    alerts.evaluate_all(now=now + timedelta(minutes=6))
    assert AlertRule.objects.get().firing_since is None
    LLMCall.objects.filter(pk=call.pk).update(created_at=now)
    alerts.evaluate_all(now=now + timedelta(minutes=10))
    assert len(webhook.log) == 1 and AlertRule.objects.get().firing_since is not None

    # A new incident after the cool-down is a new message.
    LLMCall.objects.filter(pk=call.pk).update(created_at=month_start(now) - timedelta(days=1))
    alerts.evaluate_all(now=now + timedelta(minutes=40))
    LLMCall.objects.filter(pk=call.pk).update(created_at=now)
    alerts.evaluate_all(now=now + timedelta(minutes=41))
    alerts.evaluate_all(now=now + timedelta(minutes=42))
    assert len(webhook.log) == 2 and len(mail.outbox) == 2


def _auto_approved_and_sampled(demo, customer_reply_input):
    """A submission whose auto-approved draft was drawn for the audit sample (a review task)."""
    from tests.integration.conftest import completion
    from workflows import services

    submission = submit(demo, customer_reply_input)
    claimed = services.generation_claim(submission_id=submission.pk)
    draft = services.draft_record(submission_id=submission.pk, attempt=claimed.attempts,
                                  result=completion("auto"), audit_draw=0.0)
    task = draft.review_tasks.get()
    assert task.sampled
    return task


def test_alert_metrics_queue_age_escape_rate_and_failure_rate(demo, customer_reply_input):
    from tests.integration.conftest import drafted
    from workflows import services

    workflow, reviewer = demo.workflows["customer-reply"], demo.users["reviewer"]
    queue = AlertRule.objects.create(workflow=workflow, metric=AlertMetric.QUEUE_AGE, threshold=10)
    escape = AlertRule.objects.create(workflow=workflow, metric=AlertMetric.ESCAPE_RATE, threshold=0.5,
                                      window_minutes=60 * 24)
    failures = AlertRule.objects.create(workflow=workflow, metric=AlertMetric.FAILURE_RATE, threshold=0.3)
    now = timezone.now()
    assert alerts.measure(escape, now) is None  # no audit-sampled decisions: nothing to judge
    assert alerts.measure(failures, now) is None  # nothing generated yet

    task = drafted(submit(demo, customer_reply_input)).review_tasks.get()
    assert alerts.measure(queue, task.created_at + timedelta(minutes=25)) == pytest.approx(25)

    # Audit sample: one approved unchanged, one rejected -> 1 material change in 2.
    kept, changed = (_auto_approved_and_sampled(demo, customer_reply_input) for _ in range(2))
    services.review_claim(task_id=kept.pk, user=reviewer)
    services.review_approve(task_id=kept.pk, user=reviewer)
    services.review_claim(task_id=changed.pk, user=reviewer)
    services.review_reject(task_id=changed.pk, user=reviewer, reason_code="inaccurate", reason_text="Wrong facts.")
    assert alerts.measure(escape, timezone.now()) == pytest.approx(upper_bound(1, 2))

    # Three drafts and one generation that failed: a failure rate of 1/4.
    failed = submit(demo, customer_reply_input)
    claimed = services.generation_claim(submission_id=failed.pk)
    services.generation_fail(submission_id=failed.pk, attempt=claimed.attempts, kind="provider_unavailable",
                             reason="503")
    assert alerts.measure(failures, timezone.now()) == pytest.approx(0.25)


def test_csv_of_a_chart_has_its_numbers(demo, customer_reply_input):
    from tests.integration.conftest import drafted

    drafted(submit(demo, customer_reply_input))
    table = tables.cost_by_model(demo.users["compliance"], timezone.now() - timedelta(days=1))
    client = Client()
    client.force_login(demo.users["compliance"])
    response = client.get("/costs/csv/cost-by-model.csv?days=7")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert lines[0].startswith("Model,Calls,Failed calls")
    assert len(lines) == 1 + len(table.rows) and len(table.rows) >= 1


def test_latency_percentiles_and_target_share_from_sql(demo):
    """Released in 2, 4, 6 and 8 seconds (non-blocking lanes), one blocking draft in 100 s that
    does not count: p50 = 5 s, p95 = 7.7 s (linear interpolation), half within the 5 s target;
    model calls of 100, 200, 300, 400 and 400 ms (every lane counts): p50 = 300 ms."""
    workflow = demo.workflows["underwriting-memo"]
    now = timezone.now() - timedelta(hours=1)
    for seconds, lane in ((2, "auto_approve"), (4, "async_review"), (6, "auto_approve"), (8, "async_review"),
                          (100, "blocking_review")):
        s = Submission.objects.create(workflow_version=demo.version("underwriting-memo"), data={}, lane=lane,
                                      submitted_by=demo.users["submitter"], created_at=now,
                                      released_at=now + timedelta(seconds=seconds))
        LLMCall.objects.create(submission=s, attempt=1, engine="openai", model="gpt-4o-mini", ok=True,
                               latency_ms=seconds * 50 if seconds < 100 else 400, created_at=now)
    (row,) = [r for r in selectors.latency_by_workflow(demo.users["compliance"], now - timedelta(days=1))
              if r["slug"] == "underwriting-memo"]
    assert row["released"] == 4
    assert row["e2e_p50_s"] == pytest.approx(5.0) and row["e2e_p95_s"] == pytest.approx(7.7)
    assert row["met_share"] == pytest.approx(0.5) and row["meets_target"] is False
    assert row["call_p50_ms"] == pytest.approx(300) and row["calls"] == 5
    rule = AlertRule.objects.create(workflow=workflow, metric=AlertMetric.LATENCY_P95, threshold=5,
                                    window_minutes=24 * 60)
    assert alerts.measure(rule, timezone.now()) == pytest.approx(7.7)


def test_the_claims_read_the_gate_through_a_short_cache_that_budget_changes_refresh(demo):
    # workflows/gate.py: a claim reads the gate's answer from the shared cache (one read per
    # draft instead of the budget's queries); a change made through the costs app replaces it.
    from workflows.gate import HOLD_CACHE_SECONDS, generation_hold, refresh_hold

    workflow = demo.workflows["customer-reply"]
    first = Submission.objects.create(workflow_version=demo.version("customer-reply"),
                                      submitted_by=demo.users["submitter"], data={})
    _spend(first, "5.00")
    assert refresh_hold(workflow_id=workflow.pk) is None
    Budget.objects.create(workflow=workflow, monthly_usd=Decimal("1"), hard_stop=True)  # behind the app's back
    assert generation_hold(workflow_id=workflow.pk) == "budget"  # asked directly (the pages)
    assert generation_hold(workflow_id=workflow.pk, cached=True) is None  # at most HOLD_CACHE_SECONDS old
    assert 0 < HOLD_CACHE_SECONDS <= 10
    assert cost_services.resume_if_allowed(workflow_id=workflow.pk, reason="test") == []  # refreshes it
    assert generation_hold(workflow_id=workflow.pk, cached=True) == "budget"
    Budget.objects.filter(workflow=workflow).update(hard_stop=False)
    assert refresh_hold(workflow_id=workflow.pk) is None
    assert generation_hold(workflow_id=workflow.pk, cached=True) is None
