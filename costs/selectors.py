"""Every read of the cost, latency and reviewer pages, scoped to the user and aggregated in SQL.

Workflow admins and compliance see every workflow's figures (compliance read-only); anyone
else sees nothing, and the views answer 404 before asking. Python only prices token sums with
the price table and computes the projection; sums, counts, averages and percentiles come from
the database.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import (
    Aggregate,
    Avg,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    Min,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from workflows.models import Decision, Draft, Lane, LLMCall, ReviewTask, Submission, SubmissionState, Workflow
from workflows.pipeline import pricing
from workflows.roles import COMPLIANCE, WORKFLOW_ADMIN, has_role
from workflows.vocab import CallOutcome, CallPurpose

from . import projection
from .budgets import month_start
from .models import AlertRule, Budget, LatencyTarget

WF = "submission__workflow_version__workflow"
NON_BLOCKING = (Lane.AUTO_APPROVE, Lane.ASYNC_REVIEW)
# A reviewer decision that changed the draft materially (for the escape rate): anything but
# approving it unchanged. Minor/major edit labels arrive with the calibration issue; until then
# every edit counts, which overstates the escape rate rather than hiding escapes.


def may_see_costs(user) -> bool:
    return has_role(user, WORKFLOW_ADMIN) or has_role(user, COMPLIANCE)


def may_manage_costs(user) -> bool:
    """Budgets, targets and alert rules are set by workflow admins; compliance only reads."""
    return has_role(user, WORKFLOW_ADMIN)


def workflows_for_costs(user) -> QuerySet[Workflow]:
    return Workflow.objects.order_by("name") if may_see_costs(user) else Workflow.objects.none()


# --- SQL helpers ---------------------------------------------------------------------------


class Percentile(Aggregate):
    """percentile_cont(p) WITHIN GROUP (ORDER BY x) on PostgreSQL. SQLite (the demo default)
    has no percentile aggregate: it answers NULL there and the pages say "needs PostgreSQL"."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, fraction: float, **extra):
        super().__init__(expression, fraction=float(fraction), **extra)

    def as_sqlite(self, compiler, connection, **extra_context):
        return "NULL", []


class EpochSeconds(Func):
    template = "EXTRACT(EPOCH FROM %(expressions)s)"
    output_field = FloatField()

    def as_sqlite(self, compiler, connection, **extra_context):
        # Django stores a duration on SQLite as microseconds.
        sql, params = compiler.compile(self.source_expressions[0])
        return f"(({sql}) / 1000000.0)", params


def seconds_between(start: str, end: str):
    return EpochSeconds(ExpressionWrapper(F(end) - F(start), output_field=DurationField()))


def percentiles_supported() -> bool:
    return connection.vendor == "postgresql"


def _calls(user, since: datetime) -> QuerySet[LLMCall]:
    return LLMCall.objects.filter(**{f"{WF}__in": workflows_for_costs(user)}, created_at__gte=since)


def _money(value) -> Decimal:
    return (value or Decimal(0)).quantize(Decimal("0.000001"))


def _reprice(model: str, prompt: int, completion: int, cached: int) -> Decimal | None:
    price = pricing.price_for(model)
    if price is None:
        return None
    uncached = max(prompt - cached, 0)
    total = uncached * price["input"] + cached * price.get("cached_input", price["input"]) + completion * price["output"]
    return total / pricing.PER_TOKENS


# --- cost ----------------------------------------------------------------------------------


def cost_by_day(user, since: datetime) -> list[dict]:
    """One row per day and workflow: calls and cost."""
    return list(
        _calls(user, since)
        .annotate(day=TruncDate("created_at"))
        .values("day", workflow=F(f"{WF}__name"))
        .annotate(calls=Count("id"), cost=Sum("cost_usd"))
        .order_by("day", "workflow")
    )


def cost_by_model(user, since: datetime) -> list[dict]:
    return list(
        _calls(user, since)
        .values("model")
        .annotate(
            calls=Count("id"), failed=Count("id", filter=Q(ok=False)),
            prompt_tokens=Sum("prompt_tokens"), completion_tokens=Sum("completion_tokens"),
            cached_tokens=Sum("cached_tokens"), cost=Sum("cost_usd"),
        )
        .order_by("-cost", "model")
    )


def cost_by_workflow(user, since: datetime) -> list[dict]:
    """Per workflow: cost, calls (failed, cache hits), submissions, approved outputs, cost per
    approved output (all spend, wasted attempts included, over the approved outputs) and the
    estimated cache savings."""
    calls = {
        row["workflow_id"]: row
        for row in _calls(user, since).values(workflow_id=F(f"{WF}__id")).annotate(
            calls=Count("id"), failed=Count("id", filter=Q(ok=False)),
            cache_hits=Count("id", filter=Q(outcome=CallOutcome.CACHE_HIT)), cost=Sum("cost_usd"),
        )
    }
    submissions = {
        row["workflow_id"]: row
        for row in Submission.objects.filter(
            workflow_version__workflow__in=workflows_for_costs(user), created_at__gte=since
        ).values(workflow_id=F("workflow_version__workflow_id")).annotate(
            submissions=Count("id"), approved=Count("id", filter=Q(state=SubmissionState.APPROVED)),
        )
    }
    savings = cache_savings(user, since)
    rows = []
    for wf in workflows_for_costs(user):
        c, s = calls.get(wf.pk, {}), submissions.get(wf.pk, {})
        cost = _money(c.get("cost"))
        approved = s.get("approved", 0)
        rows.append({
            "workflow": wf.name, "slug": wf.slug, "calls": c.get("calls", 0), "failed": c.get("failed", 0),
            "cache_hits": c.get("cache_hits", 0), "cost": cost, "submissions": s.get("submissions", 0),
            "approved": approved, "cost_per_approved": _money(cost / approved) if approved else None,
            "cache_savings": _money(savings.get(wf.pk)),
        })
    return rows


def cache_savings(user, since: datetime) -> dict[int, Decimal]:
    """Estimated USD the draft cache saved per workflow: each cache hit times the average
    cost of a paid, successful draft call of the same workflow and model in the period, plus
    the average grading call (a hit reuses the stored grade). A hit records no tokens (nothing
    was sent), so the saving can only be estimated from the calls that were paid for."""
    calls = _calls(user, since)
    hits = calls.filter(outcome=CallOutcome.CACHE_HIT).values(wf=F(f"{WF}__id"), m=F("model")).annotate(n=Count("id"))
    paid = {
        (row["wf"], row["m"], row["purpose"]): row["avg"]
        for row in calls.filter(ok=True).exclude(outcome=CallOutcome.CACHE_HIT)
        .filter(purpose__in=[CallPurpose.DRAFT, CallPurpose.QA])
        .values("purpose", wf=F(f"{WF}__id"), m=F("model")).annotate(avg=Avg("cost_usd"))
    }
    qa_avg: dict[int, Decimal] = {}
    for (wf, _model, purpose), avg in paid.items():
        if purpose == CallPurpose.QA:
            qa_avg[wf] = max(qa_avg.get(wf, Decimal(0)), avg or Decimal(0))
    savings: dict[int, Decimal] = {}
    for row in hits:
        per_hit = (paid.get((row["wf"], row["m"], CallPurpose.DRAFT)) or Decimal(0)) + qa_avg.get(row["wf"], Decimal(0))
        savings[row["wf"]] = savings.get(row["wf"], Decimal(0)) + per_hit * row["n"]
    return savings


def interactions(user, since: datetime) -> QuerySet[Submission]:
    """One row per submission: every call it made (drafts, QA, cascade, repair, samples,
    retries and failures, over all attempts), newest first. Paginated by the view."""
    return (
        Submission.objects.filter(workflow_version__workflow__in=workflows_for_costs(user), created_at__gte=since)
        .select_related("workflow_version__workflow")
        .annotate(
            calls=Count("llm_calls"), failed_calls=Count("llm_calls", filter=Q(llm_calls__ok=False)),
            qa_calls=Count("llm_calls", filter=Q(llm_calls__purpose=CallPurpose.QA)),
            cascade_calls=Count("llm_calls", filter=Q(llm_calls__purpose=CallPurpose.CASCADE)),
            tokens=Coalesce(Sum("llm_calls__prompt_tokens"), 0) + Coalesce(Sum("llm_calls__completion_tokens"), 0),
            cost=Coalesce(Sum("llm_calls__cost_usd"), Decimal(0)),
        )
        .order_by("-created_at", "-pk")
    )


def interaction_cost(submission_id: int) -> Decimal:
    return _money(LLMCall.objects.filter(submission_id=submission_id).aggregate(total=Sum("cost_usd"))["total"])


# --- projection and model switch -------------------------------------------------------------

DISTRIBUTION_DAYS = 30
RATE_DAYS = 7


@dataclass(frozen=True)
class WorkflowProjection:
    workflow: Workflow
    primary_model: str
    projection: projection.Projection
    budget: Budget | None
    model_mix: list[dict]
    switch: list[dict]


def projections(user, *, now: datetime | None = None) -> list[WorkflowProjection]:
    """This month's spend per workflow, at today's rate and at 10x, from the per-submission
    costs of the last 30 days; the model mix; what other primary models would have cost."""
    now = now or timezone.now()
    start = month_start(now)
    next_month = (start + timedelta(days=32)).replace(day=1)
    remaining_days = max((next_month - now).total_seconds() / 86400, 0.0)
    since = now - timedelta(days=DISTRIBUTION_DAYS)
    workflows = list(workflows_for_costs(user))
    per_submission: dict[int, list[float]] = {wf.pk: [] for wf in workflows}
    for wf_id, cost in (
        # Grouped by submission (annotate before values_list): one cost per submission.
        Submission.objects.filter(workflow_version__workflow__in=workflows, created_at__gte=since)
        .annotate(cost=Coalesce(Sum("llm_calls__cost_usd"), Decimal(0)))
        .values_list("workflow_version__workflow_id", "cost")
    ):
        per_submission[wf_id].append(float(cost))
    recent = dict(
        Submission.objects.filter(workflow_version__workflow__in=workflows, created_at__gte=now - timedelta(days=RATE_DAYS))
        .values_list("workflow_version__workflow_id").annotate(n=Count("id")).values_list("workflow_version__workflow_id", "n")
    )
    spent = dict(
        LLMCall.objects.filter(**{f"{WF}__in": workflows}, created_at__gte=start)
        .values_list(f"{WF}__id").annotate(c=Sum("cost_usd")).values_list(f"{WF}__id", "c")
    )
    budgets = {b.workflow_id: b for b in Budget.objects.filter(workflow__in=workflows)}
    mix = _model_mix(workflows, since)
    result = []
    for wf in workflows:
        version = wf.current_version
        primary = version.spec.model.name if version else ""
        result.append(WorkflowProjection(
            workflow=wf, primary_model=primary, budget=budgets.get(wf.pk),
            projection=projection.project(
                per_submission[wf.pk], month_to_date=float(spent.get(wf.pk) or 0),
                daily_submissions=recent.get(wf.pk, 0) / RATE_DAYS, remaining_days=remaining_days,
            ),
            model_mix=mix.get(wf.pk, []),
            switch=model_switch(wf, primary, since),
        ))
    return result


def _model_mix(workflows, since) -> dict[int, list[dict]]:
    rows = (
        LLMCall.objects.filter(**{f"{WF}__in": workflows}, created_at__gte=since)
        .values("model", wf=F(f"{WF}__id")).annotate(calls=Count("id"), cost=Sum("cost_usd")).order_by("-cost")
    )
    mix: dict[int, list[dict]] = {}
    for row in rows:
        mix.setdefault(row["wf"], []).append(row)
    for entries in mix.values():
        total = sum((e["cost"] or 0) for e in entries) or 1
        for e in entries:
            e["share"] = float((e["cost"] or 0) / total)
    return mix


def model_switch(workflow: Workflow, primary: str, since: datetime) -> list[dict]:
    """What the last 30 days would have cost with another primary model: the primary's own
    calls (drafts, repairs, samples) re-priced token for token from the price table; the other
    calls (QA, cascade, fallbacks) unchanged. Token counts differ a little between model
    families' tokenizers; this is the estimate a price table can give."""
    calls = LLMCall.objects.filter(**{f"{WF}": workflow}, created_at__gte=since)
    total = calls.aggregate(c=Sum("cost_usd"))["c"] or Decimal(0)  # rounded only at the end
    own = calls.filter(model=primary, purpose__in=[CallPurpose.DRAFT, CallPurpose.REPAIR, CallPurpose.SAMPLE])
    sums = own.aggregate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"), k=Sum("cached_tokens"), cost=Sum("cost_usd"))
    if not sums["p"] and not sums["c"]:
        return []
    own_cost = sums["cost"] or Decimal(0)
    rows = []
    for model in sorted(pricing.prices()):
        if model == primary or model.startswith("offline"):
            continue
        alt = _reprice(model, sums["p"] or 0, sums["c"] or 0, sums["k"] or 0)
        new_total = total - own_cost + alt
        rows.append({"model": model, "cost": _money(new_total), "change": _money(new_total - total),
                     "change_pct": float((new_total - total) / total * 100) if total else None})
    return sorted(rows, key=lambda r: r["cost"])


# --- latency ---------------------------------------------------------------------------------


def latency_targets(workflows) -> dict[int, tuple[float, float]]:
    targets = {t.workflow_id: (t.seconds, t.share) for t in LatencyTarget.objects.filter(workflow__in=workflows)}
    return {wf.pk: targets.get(wf.pk, (LatencyTarget.DEFAULT_SECONDS, LatencyTarget.DEFAULT_SHARE)) for wf in workflows}


def latency_by_workflow(user, since: datetime) -> list[dict]:
    """Model-call p50/p95 (requests actually sent) and end-to-end submitted -> released
    p50/p95 for the non-blocking lanes, against each workflow's target."""
    workflows = list(workflows_for_costs(user))
    call_rows = {
        row["wf"]: row
        for row in LLMCall.objects.filter(**{f"{WF}__in": workflows}, created_at__gte=since)
        .exclude(outcome__in=[CallOutcome.CACHE_HIT, CallOutcome.CIRCUIT_OPEN])
        .values(wf=F(f"{WF}__id")).annotate(
            calls=Count("id"), p50=Percentile("latency_ms", 0.5), p95=Percentile("latency_ms", 0.95))
    }
    targets = latency_targets(workflows)
    rows = []
    for wf in workflows:
        seconds, share = targets[wf.pk]
        released = Submission.objects.filter(
            workflow_version__workflow=wf, created_at__gte=since, released_at__isnull=False, lane__in=NON_BLOCKING)
        e2e = seconds_between("created_at", "released_at")
        agg = released.annotate(e2e=e2e).aggregate(
            n=Count("id"), p50=Percentile("e2e", 0.5), p95=Percentile("e2e", 0.95),
            within=Count("id", filter=Q(released_at__lte=F("created_at") + timedelta(seconds=seconds))),
        )
        c = call_rows.get(wf.pk, {})
        met_share = agg["within"] / agg["n"] if agg["n"] else None
        rows.append({
            "workflow": wf.name, "slug": wf.slug, "calls": c.get("calls", 0),
            "call_p50_ms": c.get("p50"), "call_p95_ms": c.get("p95"),
            "released": agg["n"], "e2e_p50_s": agg["p50"], "e2e_p95_s": agg["p95"],
            "target_seconds": seconds, "target_share": share, "met_share": met_share,
            "meets_target": None if met_share is None else met_share >= share,
        })
    return rows


def lane_mix_by_day(user, since: datetime) -> list[dict]:
    return list(
        Draft.objects.filter(submission__workflow_version__workflow__in=workflows_for_costs(user), created_at__gte=since)
        .annotate(day=TruncDate("created_at")).values("day", "lane").annotate(n=Count("id")).order_by("day", "lane")
    )


# --- reviewers -------------------------------------------------------------------------------


def _decided(user, since):
    return ReviewTask.objects.decided().filter(
        submission__workflow_version__workflow__in=workflows_for_costs(user), decided_at__gte=since)


def reviewer_stats(user, since: datetime) -> QuerySet:
    """Per reviewer: decisions, approved unchanged (share), time to decision p50/p95 (from the
    review task's creation), decisions after their SLA."""
    return (
        _decided(user, since).filter(decided_by__isnull=False)
        .values(reviewer=F("decided_by__username"))
        .annotate(
            decisions=Count("id"),
            unchanged=Count("id", filter=Q(decision=Decision.APPROVE)),
            p50_s=Percentile(seconds_between("created_at", "decided_at"), 0.5),
            p95_s=Percentile(seconds_between("created_at", "decided_at"), 0.95),
            late=Count("id", filter=Q(due_at__isnull=False, decided_at__gt=F("due_at"))),
        )
        .order_by("-decisions", "reviewer")
    )


def decisions_by_day(user, since: datetime) -> list[dict]:
    return list(_decided(user, since).annotate(day=TruncDate("decided_at")).values("day")
                .annotate(n=Count("id")).order_by("day"))


def review_by_workflow(user, since: datetime) -> list[dict]:
    """Per workflow: decisions, time to decision p50/p95, SLA breaches (decided late, and open
    past due now), the oldest open review's age."""
    now = timezone.now()
    decided = {
        row["wf"]: row for row in _decided(user, since).values(wf=F("submission__workflow_version__workflow_id"))
        .annotate(
            decisions=Count("id"), p50_s=Percentile(seconds_between("created_at", "decided_at"), 0.5),
            p95_s=Percentile(seconds_between("created_at", "decided_at"), 0.95),
            late=Count("id", filter=Q(due_at__isnull=False, decided_at__gt=F("due_at"))),
        )
    }
    open_rows = {
        row["wf"]: row for row in ReviewTask.objects.open()
        .filter(submission__workflow_version__workflow__in=workflows_for_costs(user))
        .values(wf=F("submission__workflow_version__workflow_id"))
        .annotate(open=Count("id"), overdue=Count("id", filter=Q(due_at__lt=now)), oldest=Min("created_at"))
    }
    rows = []
    for wf in workflows_for_costs(user):
        d, o = decided.get(wf.pk, {}), open_rows.get(wf.pk, {})
        rows.append({
            "workflow": wf.name, "decisions": d.get("decisions", 0), "p50_s": d.get("p50_s"), "p95_s": d.get("p95_s"),
            "late": d.get("late", 0), "open": o.get("open", 0), "overdue": o.get("overdue", 0),
            "oldest_minutes": (now - o["oldest"]).total_seconds() / 60 if o.get("oldest") else None,
        })
    return rows


# --- budgets and alerts -------------------------------------------------------------------


def budgets_overview(user, *, now: datetime | None = None) -> list[dict]:
    workflows = list(workflows_for_costs(user))
    start = month_start(now)
    spent = dict(
        LLMCall.objects.filter(**{f"{WF}__in": workflows}, created_at__gte=start)
        .values_list(f"{WF}__id").annotate(c=Sum("cost_usd")).values_list(f"{WF}__id", "c")
    )
    paused = dict(
        Submission.objects.paused().filter(workflow_version__workflow__in=workflows)
        .values_list("workflow_version__workflow_id").annotate(n=Count("id")).values_list("workflow_version__workflow_id", "n")
    )
    budgets = {b.workflow_id: b for b in Budget.objects.filter(workflow__in=workflows)}
    targets = latency_targets(workflows)
    rows = []
    for wf in workflows:
        budget = budgets.get(wf.pk)
        spend = _money(spent.get(wf.pk))
        rows.append({
            "workflow": wf, "budget": budget, "spent": spend, "paused": paused.get(wf.pk, 0),
            "used": float(spend / budget.monthly_usd) if budget else None,
            "target_seconds": targets[wf.pk][0], "target_share": targets[wf.pk][1],
        })
    return rows


def alert_rules_for(user) -> QuerySet[AlertRule]:
    return AlertRule.objects.filter(workflow__in=workflows_for_costs(user)).select_related("workflow")


def queue_age_minutes(workflow_id: int, now: datetime) -> float:
    oldest = ReviewTask.objects.open().filter(submission__workflow_version__workflow_id=workflow_id).aggregate(
        m=Min("created_at"))["m"]
    return (now - oldest).total_seconds() / 60 if oldest else 0.0
