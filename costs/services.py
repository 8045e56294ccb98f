"""Every write of the costs app, each with its audit event in the same transaction."""
from __future__ import annotations

import logging
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from workflows import audit
from workflows import services as workflow_services
from workflows.gate import refresh_hold
from workflows.models import DomainError, Submission, Workflow
from workflows.roles import system_user
from workflows.vocab import AuditAction

from .alerts import workflow_admin_emails
from .budgets import budget_spent, month_key, month_spend
from .models import WARN_SHARE, AlertRule, Budget, LatencyTarget

log = logging.getLogger(__name__)


def _track(obj, user, reason: str):
    obj._history_user = user
    obj._change_reason = reason
    return obj


def _money(value) -> str:
    return str(Decimal(value).quantize(Decimal("0.01")))


@transaction.atomic
def budget_set(*, workflow: Workflow, monthly_usd: Decimal, hard_stop: bool, actor) -> Budget:
    """Create or change a workflow's monthly budget. A budget that now allows spending again
    sends its paused submissions back to the worker once this commits."""
    budget = Budget.objects.select_for_update().filter(workflow=workflow).first()
    before = {"monthly_usd": _money(budget.monthly_usd), "hard_stop": budget.hard_stop} if budget else None
    if budget is None:
        budget = Budget(workflow=workflow)
    budget.monthly_usd, budget.hard_stop, budget.updated_at = monthly_usd, hard_stop, timezone.now()
    # A raised budget may be under 80% again: let the warning go out again when it is reached.
    if before is not None and Decimal(before["monthly_usd"]) < monthly_usd:
        budget.warned_month = ""
    _track(budget, actor, "budget changed").save()
    audit.record(
        action=AuditAction.BUDGET_CHANGED, obj=budget, actor=actor, workflow_version=workflow.current_version,
        payload={"workflow_id": workflow.pk, "before": before,
                 "after": {"monthly_usd": _money(monthly_usd), "hard_stop": hard_stop}},
    )
    transaction.on_commit(partial(resume_if_allowed, workflow_id=workflow.pk, reason="budget changed"))
    return budget


@transaction.atomic
def budget_remove(*, workflow: Workflow, actor) -> None:
    budget = Budget.objects.select_for_update().filter(workflow=workflow).first()
    if budget is None:
        raise DomainError("This workflow has no budget.")
    before = {"monthly_usd": _money(budget.monthly_usd), "hard_stop": budget.hard_stop}
    audit.record(action=AuditAction.BUDGET_CHANGED, obj=budget, actor=actor, workflow_version=workflow.current_version,
                 payload={"workflow_id": workflow.pk, "before": before, "after": None})
    _track(budget, actor, "budget removed").delete()
    transaction.on_commit(partial(resume_if_allowed, workflow_id=workflow.pk, reason="budget removed"))


@transaction.atomic
def latency_target_set(*, workflow: Workflow, seconds: float, share: float, actor) -> LatencyTarget:
    target = LatencyTarget.objects.select_for_update().filter(workflow=workflow).first()
    before = {"seconds": target.seconds, "share": target.share} if target else None
    target = target or LatencyTarget(workflow=workflow)
    target.seconds, target.share = seconds, share
    _track(target, actor, "latency target changed").save()
    audit.record(action=AuditAction.LATENCY_TARGET_CHANGED, obj=target, actor=actor,
                 workflow_version=workflow.current_version,
                 payload={"workflow_id": workflow.pk, "before": before, "after": {"seconds": seconds, "share": share}})
    return target


def _rule_facts(rule: AlertRule) -> dict:
    # The webhook URL may carry a secret token (Slack's do): the chain gets its hash only.
    return {"metric": rule.metric, "threshold": rule.threshold, "window_minutes": rule.window_minutes,
            "cooldown_minutes": rule.cooldown_minutes, "email": rule.email, "enabled": rule.enabled,
            "webhook_hash": audit.content_hash(rule.webhook_url) if rule.webhook_url else ""}


@transaction.atomic
def alert_rule_save(*, rule: AlertRule, actor) -> AlertRule:
    """Save a new or edited rule (a ModelForm's unsaved instance). An edited rule starts
    from no incident, so its next evaluation judges the new threshold afresh."""
    created = rule.pk is None
    if not created:
        rule.firing_since = None
    _track(rule, actor, "alert rule created" if created else "alert rule changed").save()
    audit.record(action=AuditAction.ALERT_RULE_CHANGED, obj=rule, actor=actor,
                 workflow_version=rule.workflow.current_version,
                 payload={"workflow_id": rule.workflow_id, "change": "created" if created else "changed",
                          **_rule_facts(rule)})
    return rule


@transaction.atomic
def alert_rule_delete(*, rule: AlertRule, actor) -> None:
    audit.record(action=AuditAction.ALERT_RULE_CHANGED, obj=rule, actor=actor,
                 workflow_version=rule.workflow.current_version,
                 payload={"workflow_id": rule.workflow_id, "change": "deleted", **_rule_facts(rule)})
    _track(rule, actor, "alert rule deleted").delete()


# --- periodic work ------------------------------------------------------------------------------


def resume_if_allowed(*, workflow_id: int, reason: str) -> list[int]:
    """Send the workflow's paused submissions back to the worker when the gate allows now
    (the budget was raised or removed, its hard stop turned off, or the month turned). The
    answer also replaces the one the claims read from the gate's cache (workflows/gate.py), so
    they see a budget just raised, lowered or removed at once."""
    if refresh_hold(workflow_id=workflow_id) is not None:
        return []
    return workflow_services.generation_resume(workflow_id=workflow_id, reason=reason)


def resume_paused() -> int:
    workflow_ids = (Submission.objects.paused().values_list("workflow_version__workflow_id", flat=True)
                    .distinct().order_by())
    return sum(len(resume_if_allowed(workflow_id=wf, reason="budget allows")) for wf in set(workflow_ids))


def budget_warnings() -> int:
    """Warn the workflow admins once per month per workflow when spend passes 80% of the
    budget. The month is marked before the e-mail goes out (after commit), so a crash
    between the two loses a warning rather than sending two."""
    sent = 0
    for budget_id in Budget.objects.exclude(warned_month=month_key()).values_list("pk", flat=True):
        with transaction.atomic():
            budget = (Budget.objects.select_for_update(skip_locked=True).select_related("workflow")
                      .filter(pk=budget_id).exclude(warned_month=month_key()).first())
            if budget is None:
                continue
            spend = month_spend(budget.workflow_id)
            if spend < budget.monthly_usd * WARN_SHARE:
                continue
            Budget.objects.filter(pk=budget.pk).update(warned_month=month_key())
            recipients = workflow_admin_emails()
            audit.record(action=AuditAction.BUDGET_WARNING_SENT, obj=budget, actor=system_user(),
                         workflow_version=budget.workflow.current_version,
                         payload={"workflow_id": budget.workflow_id, "month": month_key(),
                                  "spent_usd": _money(spend), "monthly_usd": _money(budget.monthly_usd),
                                  "recipients": len(recipients)})
            transaction.on_commit(partial(_send_warning, budget.workflow.name, spend, budget.monthly_usd,
                                          budget.hard_stop or budget_spent(budget), recipients))
            sent += 1
    return sent


def _send_warning(name: str, spend: Decimal, monthly: Decimal, stops: bool, recipients: list[str]) -> None:
    if not recipients:
        log.warning("budget warning for %s: no workflow admin has an e-mail address", name)
        return
    share = int(spend / monthly * 100)
    consequence = ("When it is reached, new drafts are paused until the budget is raised or the month ends "
                   "(nothing submitted is lost)." if stops else "There is no hard stop: drafting continues.")
    send_mail(f"[ReviewDesk] {name} has used {share}% of its monthly budget",
              f"{name} has spent ${_money(spend)} of its ${_money(monthly)} budget this month ({share}%).\n"
              f"{consequence}\n", settings.DEFAULT_FROM_EMAIL, recipients)
