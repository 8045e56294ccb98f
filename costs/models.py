"""Budgets, latency targets and alert rules per workflow (issue 9).

Costs themselves are not stored here: every ``workflows.LLMCall`` row already carries its
tokens and its cost from the price table, and the pages aggregate those rows in SQL.
"""
from __future__ import annotations

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from simple_history.models import HistoricalRecords

from workflows.models import Workflow

# Share of the monthly budget at which the workflow admins are warned (once per month).
WARN_SHARE = Decimal("0.80")


class Budget(models.Model):
    """A workflow's monthly spend limit in USD, over every model call of its submissions."""

    workflow = models.OneToOneField(Workflow, on_delete=models.CASCADE, related_name="budget")
    monthly_usd = models.DecimalField(max_digits=12, decimal_places=2, validators=[MinValueValidator(Decimal("0.01"))])
    # Pause new generation once the month's spend reaches the budget (submissions are kept).
    hard_stop = models.BooleanField(default=False)
    # "YYYY-MM" of the month whose 80% warning went out: one warning per month per workflow.
    warned_month = models.CharField(max_length=7, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    history = HistoricalRecords()

    def __str__(self):
        return f"{self.workflow.slug}: {self.monthly_usd} USD/month"


class LatencyTarget(models.Model):
    """End-to-end target for the non-blocking lanes: ``share`` of released drafts within
    ``seconds`` of submission. A workflow without a row uses the defaults below."""

    DEFAULT_SECONDS = 5.0
    DEFAULT_SHARE = 0.95

    workflow = models.OneToOneField(Workflow, on_delete=models.CASCADE, related_name="latency_target")
    seconds = models.FloatField(validators=[MinValueValidator(0.1), MaxValueValidator(86400)])
    share = models.FloatField(validators=[MinValueValidator(0.5), MaxValueValidator(1.0)])
    history = HistoricalRecords()


class AlertMetric(models.TextChoices):
    COST_DAY = "cost_day_usd", "Cost today (USD)"
    COST_MONTH = "cost_month_usd", "Cost this month (USD)"
    LATENCY_P95 = "latency_p95_s", "End-to-end latency p95 (seconds, last window)"
    FAILURE_RATE = "failure_rate", "Failed generations (share, last window)"
    ESCAPE_RATE = "escape_rate_bound", "Escape-rate upper bound (95%, audit sample)"
    QUEUE_AGE = "queue_age_minutes", "Oldest open review (minutes)"


class AlertRule(models.Model):
    """Fires when ``metric`` passes ``threshold``; one message per incident (see costs/alerts.py)."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="alert_rules")
    metric = models.CharField(max_length=30, choices=AlertMetric.choices)
    threshold = models.FloatField(validators=[MinValueValidator(0)])
    # The look-back for the windowed metrics (latency, failure rate, escape rate).
    window_minutes = models.PositiveIntegerField(default=60, validators=[MinValueValidator(5)])
    # After an incident resolves, a new one within this many minutes sends nothing (flapping).
    cooldown_minutes = models.PositiveIntegerField(default=60)
    email = models.BooleanField(default=True, help_text="E-mail the workflow admins.")
    webhook_url = models.URLField(blank=True, max_length=500)
    enabled = models.BooleanField(default=True)
    # Incident state, written only by the evaluation (alerts.evaluate_rule).
    firing_since = models.DateTimeField(null=True, blank=True)
    last_notified_at = models.DateTimeField(null=True, blank=True)
    last_value = models.FloatField(null=True, blank=True)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    history = HistoricalRecords(excluded_fields=["last_value", "last_evaluated_at"])

    class Meta:
        ordering = ["workflow__name", "metric"]

    def __str__(self):
        return f"{self.workflow.slug}: {self.get_metric_display()} > {self.threshold}"


class AlertNotification(models.Model):
    """One message sent for one incident, with what each channel answered."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="notifications")
    sent_at = models.DateTimeField(default=timezone.now)
    value = models.FloatField()
    text = models.TextField()
    email_to = models.JSONField(default=list, blank=True)
    webhook_status = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["-sent_at"]
