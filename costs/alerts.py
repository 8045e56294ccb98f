"""Alert rules: measure, decide whether an incident starts, and send one message for it.

An incident starts when a rule's value passes its threshold while the rule is not firing; it
ends when an evaluation finds the value back under the threshold. Only the start of an incident
sends a message, so an incident that lasts an hour is one message, not sixty; and a new
incident within ``cooldown_minutes`` of the last message sends nothing, so a value that
flaps around the threshold is one message too. The rule row is locked while it is evaluated
(``SELECT ... FOR UPDATE SKIP LOCKED``), so two evaluations at once cannot both send.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from calibration.maths import upper_bound
from workflows import audit
from workflows.labels import MATERIAL
from workflows.models import AuditEvent, Draft, Lane, LLMCall, ReviewTask, Submission
from workflows.roles import WORKFLOW_ADMIN, system_user
from workflows.vocab import AuditAction

from .budgets import month_spend
from .models import AlertMetric, AlertNotification, AlertRule
from .selectors import Percentile, queue_age_minutes, seconds_between

log = logging.getLogger(__name__)
WEBHOOK_TIMEOUT = 5.0


def workflow_admin_emails() -> list[str]:
    return sorted(
        get_user_model().objects.filter(groups__name=WORKFLOW_ADMIN, is_active=True)
        .exclude(email="").values_list("email", flat=True).distinct()
    )


# --- measuring -------------------------------------------------------------------------------


def measure(rule: AlertRule, now: datetime) -> float | None:
    """The rule's current value, or None when there is nothing to measure (no data)."""
    since = now - timedelta(minutes=rule.window_minutes)
    wf = rule.workflow_id
    if rule.metric == AlertMetric.COST_MONTH:
        return float(month_spend(wf, now))
    if rule.metric == AlertMetric.COST_DAY:
        day = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
        total = LLMCall.objects.filter(submission__workflow_version__workflow_id=wf, created_at__gte=day).aggregate(
            t=Sum("cost_usd"))["t"]
        return float(total or 0)
    if rule.metric == AlertMetric.LATENCY_P95:
        return Submission.objects.filter(
            workflow_version__workflow_id=wf, released_at__gte=since, lane__in=[Lane.AUTO_APPROVE, Lane.ASYNC_REVIEW],
        ).annotate(e2e=seconds_between("created_at", "released_at")).aggregate(p=Percentile("e2e", 0.95))["p"]
    if rule.metric == AlertMetric.FAILURE_RATE:
        failed = AuditEvent.objects.filter(
            action=AuditAction.DRAFT_FAILED, workflow_version__workflow_id=wf, created_at__gte=since).count()
        drafted = Draft.objects.filter(submission__workflow_version__workflow_id=wf, created_at__gte=since).count()
        return failed / (failed + drafted) if failed + drafted else None
    if rule.metric == AlertMetric.ESCAPE_RATE:
        counts = ReviewTask.objects.decided().filter(
            submission__workflow_version__workflow_id=wf, sampled=True, decided_at__gte=since,
        ).aggregate(n=Count("id"), changed=Count("id", filter=Q(label__in=MATERIAL)))
        # The same labels and bound as the calibration page and the quality monitor.
        return upper_bound(counts["changed"], counts["n"]) if counts["n"] else None
    if rule.metric == AlertMetric.QUEUE_AGE:
        return queue_age_minutes(wf, now)
    raise ValueError(f"unknown metric {rule.metric!r}")


# --- deciding --------------------------------------------------------------------------------


def evaluate_rule(rule_id: int, *, now: datetime | None = None) -> AlertNotification | None:
    """Measure one rule and start or end its incident; returns the notification when one was
    sent (delivered after the transaction commits)."""
    now = now or timezone.now()
    with transaction.atomic():
        rule = (AlertRule.objects.select_for_update(skip_locked=True).select_related("workflow")
                .filter(pk=rule_id, enabled=True).first())
        if rule is None:
            return None
        value = measure(rule, now)
        changes = {"last_value": value, "last_evaluated_at": now}
        notification = None
        if value is not None and value > rule.threshold:
            if rule.firing_since is None:
                changes["firing_since"] = now
                cooling = rule.last_notified_at and now - rule.last_notified_at < timedelta(minutes=rule.cooldown_minutes)
                if not cooling:
                    changes["last_notified_at"] = now
                    notification = _notify(rule, value, now)
        elif value is not None and rule.firing_since is not None:
            changes["firing_since"] = None
        # A plain UPDATE: evaluations every minute must not write a history row each.
        AlertRule.objects.filter(pk=rule.pk).update(**changes)
    return notification


def _notify(rule: AlertRule, value: float, now: datetime) -> AlertNotification:
    text = message_for(rule, value)
    notification = AlertNotification.objects.create(
        rule=rule, sent_at=now, value=value, text=text, email_to=workflow_admin_emails() if rule.email else [],
    )
    audit.record(
        action=AuditAction.ALERT_SENT, obj=rule, actor=system_user(),
        workflow_version=rule.workflow.current_version,
        payload={"metric": rule.metric, "threshold": rule.threshold, "value": round(value, 6),
                 "notification_id": notification.pk, "email": bool(notification.email_to),
                 "webhook": bool(rule.webhook_url)},
    )
    transaction.on_commit(lambda: deliver(notification.pk))
    return notification


def message_for(rule: AlertRule, value: float) -> str:
    return (f"ReviewDesk alert: {rule.workflow.name} — {rule.get_metric_display()} is {value:.4g}, "
            f"above the threshold of {rule.threshold:.4g}. (One message per incident; the next one "
            f"comes after it has cleared and at least {rule.cooldown_minutes} minutes have passed.)")


def deliver(notification_id: int) -> None:
    """Send one notification by e-mail and to the webhook (Slack-compatible {"text": ...}).
    A channel that fails is recorded on the notification and logged; it is not retried, so a
    flaky receiver never turns one incident into several messages."""
    notification = AlertNotification.objects.select_related("rule__workflow").get(pk=notification_id)
    rule = notification.rule
    status = ""
    if notification.email_to:
        try:
            send_mail(f"[ReviewDesk] Alert: {rule.workflow.name}", notification.text, settings.DEFAULT_FROM_EMAIL,
                      notification.email_to)
        except Exception:  # noqa: BLE001 - a mail outage must not stop the webhook
            log.exception("alert %s: e-mail not sent", notification_id)
    if rule.webhook_url:
        try:
            response = httpx.post(rule.webhook_url, json={"text": notification.text}, timeout=WEBHOOK_TIMEOUT)
            status = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            status = f"error: {type(exc).__name__}"[:100]
            log.warning("alert %s: webhook failed: %s", notification_id, exc)
        AlertNotification.objects.filter(pk=notification_id).update(webhook_status=status)


def evaluate_all(*, now: datetime | None = None) -> int:
    sent = 0
    for rule_id in AlertRule.objects.filter(enabled=True).values_list("pk", flat=True):
        if evaluate_rule(rule_id, now=now) is not None:
            sent += 1
    return sent
