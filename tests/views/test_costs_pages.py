"""The cost pages over HTTP: what each reader is offered, the forms, and a page a CSP without
'unsafe-inline' can serve."""
from __future__ import annotations

import json
import re
from decimal import Decimal

from costs.models import AlertRule, Budget, LatencyTarget
from workflows.models import AuditEvent

PAGES = ("/costs/", "/costs/latency/", "/costs/reviewers/", "/costs/budgets/")


def test_pages_have_charts_with_their_numbers_and_no_inline_script_or_style(people, routed, client_for):
    routed(people["submitter"])
    routed(people["submitter"], lane="auto_approve")
    client = client_for("wfadmin")
    for path in PAGES:
        body = client.get(path).content.decode()
        assert " style=" not in body, path
        # Every <script> is either a file or a JSON data block; none runs inline code.
        for attrs, content in re.findall(r"<script([^>]*)>(.*?)</script>", body, re.S):
            assert 'src="' in attrs or 'type="application/json"' in attrs, (path, attrs)
            if 'type="application/json"' in attrs:
                assert json.loads(content)["datasets"] is not None
        # A chart's canvas names its data block, and its numbers are one click away, with a CSV.
        for chart_id in re.findall(r'<canvas data-chart="([^"]+)"', body):
            assert f'id="{chart_id}"' in body
        assert body.count("<canvas") <= body.count("<details class=\"numbers\">")
    overview = client.get("/costs/").content.decode()
    assert 'data-chart="chart-cost-by-day"' in overview and "/costs/csv/cost-by-day.csv" in overview
    assert 'src="/static/vendor/chart.umd.min.js"' in overview


def test_compliance_reads_but_is_offered_no_changes(people, client_for):
    body = client_for("compliance").get("/costs/budgets/").content.decode()
    assert "/costs/budgets/customer-reply/" not in body and "New alert rule" not in body
    admin = client_for("wfadmin").get("/costs/budgets/").content.decode()
    assert "/costs/budgets/customer-reply/" in admin and "New alert rule" in admin


def test_admin_sets_a_budget_and_target_as_audit_events(people, client_for, demo):
    client = client_for("wfadmin")
    response = client.post("/costs/budgets/customer-reply/", {
        "monthly_usd": "150", "hard_stop": "on", "target_seconds": "4", "target_share": "90"})
    assert response.status_code == 302
    budget = Budget.objects.get(workflow__slug="customer-reply")
    assert budget.monthly_usd == Decimal("150") and budget.hard_stop
    target = LatencyTarget.objects.get(workflow__slug="customer-reply")
    assert (target.seconds, target.share) == (4, 0.9)
    event = AuditEvent.objects.get(action="budget.changed")
    assert event.actor == people["wfadmin"] and event.payload["after"] == {"monthly_usd": "150.00", "hard_stop": True}
    assert AuditEvent.objects.filter(action="latency_target.changed").count() == 1
    # Saving the same values again changes nothing and records nothing.
    client.post("/costs/budgets/customer-reply/", {
        "monthly_usd": "150", "hard_stop": "on", "target_seconds": "4", "target_share": "90"})
    assert AuditEvent.objects.filter(action__in=["budget.changed", "latency_target.changed"]).count() == 2
    # Emptying the amount removes the budget, also an event.
    client.post("/costs/budgets/customer-reply/", {"monthly_usd": "", "target_seconds": "4", "target_share": "90"})
    assert not Budget.objects.exists()
    assert AuditEvent.objects.filter(action="budget.changed").last().payload["after"] is None


def test_bad_budget_input_is_a_422_with_a_message(people, client_for, demo):
    client = client_for("wfadmin")
    response = client.post("/costs/budgets/customer-reply/", {
        "monthly_usd": "-3", "hard_stop": "on", "target_seconds": "5", "target_share": "95"})
    assert response.status_code == 422
    assert "greater than or equal to 0.01" in response.content.decode()
    response = client.post("/costs/budgets/customer-reply/", {
        "monthly_usd": "", "hard_stop": "on", "target_seconds": "5", "target_share": "95"})
    assert response.status_code == 422 and "A hard stop needs a monthly budget." in response.content.decode()
    response = client.post("/costs/budgets/customer-reply/", {
        "monthly_usd": "1e400", "target_seconds": "5\x00", "target_share": "95"})
    assert response.status_code == 422
    assert not Budget.objects.exists() and not AuditEvent.objects.filter(action="budget.changed").exists()


def test_admin_creates_edits_and_deletes_an_alert_rule(people, client_for, demo):
    client = client_for("wfadmin")
    wf = demo.workflows["customer-reply"]
    response = client.post("/costs/alerts/new/", {"workflow": wf.pk, "metric": "failure_rate", "threshold": "0.2",
                                                  "window_minutes": "60", "cooldown_minutes": "30"})
    assert response.status_code == 422 and "at least one way to send" in response.content.decode()
    response = client.post("/costs/alerts/new/", {
        "workflow": wf.pk, "metric": "failure_rate", "threshold": "0.2", "window_minutes": "60",
        "cooldown_minutes": "30", "webhook_url": "https://hooks.example.com/services/T000/SECRET", "enabled": "on"})
    assert response.status_code == 302
    rule = AlertRule.objects.get()
    event = AuditEvent.objects.get(action="alert_rule.changed")
    assert event.payload["change"] == "created" and "SECRET" not in json.dumps(event.payload)
    client.post(f"/costs/alerts/{rule.pk}/", {
        "workflow": wf.pk, "metric": "failure_rate", "threshold": "0.3", "window_minutes": "60",
        "cooldown_minutes": "30", "email": "on", "enabled": "on"})
    assert AlertRule.objects.get().threshold == 0.3
    assert client.post(f"/costs/alerts/{rule.pk}/delete/").status_code == 302
    assert not AlertRule.objects.exists()
    assert [e.payload["change"] for e in AuditEvent.objects.filter(action="alert_rule.changed").order_by("id")] == [
        "created", "changed", "deleted"]


def test_a_bad_period_falls_back_to_30_days(people, client_for):
    response = client_for("compliance").get("/costs/?days=abc")
    assert response.status_code == 200 and "last 30 days" in response.content.decode()


def test_submitter_is_told_before_sending_that_drafting_is_on_hold(people, client_for, demo):
    from costs.models import Budget as BudgetModel
    from workflows.models import LLMCall, Submission

    url = "/workflows/customer-reply/new/"
    assert 'id="on-hold-notice"' not in client_for("submitter").get(url).content.decode()
    s = Submission.objects.create(workflow_version=demo.version("customer-reply"), submitted_by=people["submitter"],
                                  data={})
    LLMCall.objects.create(submission=s, attempt=1, engine="openai", model="gpt-4o", ok=True, cost_usd=Decimal("2"))
    BudgetModel.objects.create(workflow=demo.workflows["customer-reply"], monthly_usd=Decimal("1"), hard_stop=True)
    body = client_for("submitter").get(url).content.decode()
    assert 'id="on-hold-notice"' in body and "kept and drafted automatically" in body
    assert 'value="next"' in body  # sending is still offered: nothing is lost by sending
