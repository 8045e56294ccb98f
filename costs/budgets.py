"""Budget arithmetic and the generation gate that workflows calls through its setting."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from workflows.models import LLMCall


def month_start(now: datetime | None = None) -> datetime:
    now = timezone.localtime(now or timezone.now())
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def month_key(now: datetime | None = None) -> str:
    return month_start(now).strftime("%Y-%m")


def month_spend(workflow_id: int, now: datetime | None = None) -> Decimal:
    """USD spent this month on every model call of the workflow's submissions (QA, repair,
    cascade, retries and failed calls included: each LLMCall row is one billed request)."""
    total = LLMCall.objects.filter(
        submission__workflow_version__workflow_id=workflow_id, created_at__gte=month_start(now)
    ).aggregate(total=Sum("cost_usd"))["total"]
    return total or Decimal(0)


def budget_spent(budget, now: datetime | None = None) -> bool:
    return month_spend(budget.workflow_id, now) >= budget.monthly_usd


def generation_gate(*, workflow_id: int) -> str | None:
    """``REVIEWDESK_GENERATION_GATE``: "budget" when the workflow's budget has a hard stop and
    this month's spend has reached it, else None.

    Drafts already being generated finish and are paid for, so spend can pass the budget by
    what the drafts in flight cost; it never grows after that until the budget is raised or
    the month turns.
    """
    from .models import Budget

    budget = Budget.objects.filter(workflow_id=workflow_id, hard_stop=True).first()
    if budget is not None and budget_spent(budget):
        return "budget"
    return None
