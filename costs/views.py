"""Cost, latency, reviewer and budget pages: workflow admins and compliance (read-only);
everyone else gets 404 (role_required)."""
from __future__ import annotations

import csv
from datetime import timedelta

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import transaction
from django.http import StreamingHttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from workflows.denials import OutOfScope, get_in_scope
from workflows.roles import COMPLIANCE, WORKFLOW_ADMIN, has_role
from workflows.views.common import render_page, role_required

from . import selectors, services, tables
from .forms import AlertRuleForm, BudgetForm, PeriodForm
from .models import AlertNotification, Budget, LatencyTarget

READERS = (WORKFLOW_ADMIN, COMPLIANCE)
PAGE_SIZE = 50


def _since(request):
    form = PeriodForm(request.GET)
    days = form.cleaned_data["days"] if form.is_valid() and form.cleaned_data["days"] else 30
    return days, timezone.now() - timedelta(days=days)


def _context(request, **extra):
    days, since = _since(request)
    return {"days": days, "since": since, "can_manage": selectors.may_manage_costs(request.user),
            "percentiles_supported": selectors.percentiles_supported(), **extra}


@role_required(*READERS)
def cost_overview(request):
    days, since = _since(request)
    user = request.user
    ps = selectors.projections(user)
    page = Paginator(selectors.interactions(user, since), PAGE_SIZE).get_page(request.GET.get("page"))
    context = _context(
        request,
        charts=[tables.cost_by_day(user, since), tables.cost_by_workflow(user, since), tables.cost_by_model(user, since),
                tables.projection(user, since, ps)],
        extra_tables=[tables.model_mix(user, since, ps), tables.model_switch(user, since, ps)],
        interactions=page,
        can_open_submissions=has_role(user, COMPLIANCE),
    )
    return render_page(request, "costs/overview.html", context)


@role_required(*READERS)
def latency(request):
    days, since = _since(request)
    user = request.user
    context = _context(request, charts=[tables.latency(user, since), tables.lane_mix(user, since)])
    return render_page(request, "costs/latency.html", context)


@role_required(*READERS)
def reviewers(request):
    days, since = _since(request)
    user = request.user
    table = tables.reviewers(user, since)
    page = Paginator(table.rows, PAGE_SIZE).get_page(request.GET.get("page"))
    context = _context(request, charts=[tables.decisions(user, since), tables.review_workflows(user, since)],
                       reviewer_table=table, reviewer_page=page)
    return render_page(request, "costs/reviewers.html", context)


@role_required(*READERS)
def csv_download(request, name: str):
    builder = tables.BUILDERS.get(name)
    if builder is None:
        raise OutOfScope("no such cost table", object_type="page", object_id=request.path[:64])
    days, since = _since(request)
    table = builder(request.user, since)

    class Echo:
        def write(self, value):
            return value

    writer = csv.writer(Echo())

    def rows():
        yield writer.writerow(table.columns)
        for row in table.rows:
            # A cell that a spreadsheet would run as a formula is neutralised (workflow names are
            # typed by admins), as in the audit export.
            yield writer.writerow(["'" + c if isinstance(c, str) and c[:1] in "=+-@\t\r" else c for c in row])

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="reviewdesk-{name}-{days}d.csv"'
    return response


# --- budgets, targets and alert rules ------------------------------------------------------------


@role_required(*READERS)
def budgets(request):
    context = _context(
        request,
        rows=selectors.budgets_overview(request.user),
        rules=Paginator(selectors.alert_rules_for(request.user), PAGE_SIZE).get_page(request.GET.get("rules")),
        notifications=Paginator(
            AlertNotification.objects.filter(rule__in=selectors.alert_rules_for(request.user)).select_related(
                "rule__workflow"), PAGE_SIZE).get_page(request.GET.get("sent")),
        rule_form=AlertRuleForm(workflows=selectors.workflows_for_costs(request.user))
        if selectors.may_manage_costs(request.user) else None,
    )
    return render_page(request, "costs/budgets.html", context)


@role_required(WORKFLOW_ADMIN)
@require_http_methods(["GET", "POST"])
def budget_edit(request, slug: str):
    workflow = get_in_scope(selectors.workflows_for_costs(request.user), slug=slug)
    budget = Budget.objects.filter(workflow=workflow).first()
    target = LatencyTarget.objects.filter(workflow=workflow).first()
    initial = {
        "monthly_usd": budget.monthly_usd if budget else None, "hard_stop": budget.hard_stop if budget else False,
        "target_seconds": target.seconds if target else LatencyTarget.DEFAULT_SECONDS,
        "target_share": (target.share if target else LatencyTarget.DEFAULT_SHARE) * 100,
    }
    form = BudgetForm(request.POST if request.method == "POST" else None, initial=initial)
    if request.method == "POST":
        if form.is_valid():
            _save_budget_form(workflow, budget, target, form.cleaned_data, request.user)
            messages.success(request, f"Saved the budget and targets of {workflow.name}.")
            return redirect("costs_budgets")
        status = 422
    else:
        status = 200
    return render_page(request, "costs/budget_form.html", {"workflow": workflow, "form": form}, status=status)


@transaction.atomic
def _save_budget_form(workflow, budget, target, data, user) -> None:
    """Budget and target of one form: both saved or neither. An unchanged value records nothing."""
    if data["monthly_usd"] is not None:
        if budget is None or (budget.monthly_usd, budget.hard_stop) != (data["monthly_usd"], data["hard_stop"]):
            services.budget_set(workflow=workflow, monthly_usd=data["monthly_usd"], hard_stop=data["hard_stop"],
                                actor=user)
    elif budget is not None:
        services.budget_remove(workflow=workflow, actor=user)
    wanted = (data["target_seconds"], data["target_share"] / 100)
    current = (target.seconds, target.share) if target else (LatencyTarget.DEFAULT_SECONDS, LatencyTarget.DEFAULT_SHARE)
    if wanted != current:
        services.latency_target_set(workflow=workflow, seconds=wanted[0], share=wanted[1], actor=user)


@role_required(WORKFLOW_ADMIN)
@require_http_methods(["GET", "POST"])
def alert_rule_edit(request, pk: int | None = None):
    workflows = selectors.workflows_for_costs(request.user)
    rule = get_in_scope(selectors.alert_rules_for(request.user), pk=pk) if pk else None
    form = AlertRuleForm(request.POST if request.method == "POST" else None, instance=rule, workflows=workflows)
    if request.method == "POST":
        if form.is_valid():
            services.alert_rule_save(rule=form.save(commit=False), actor=request.user)
            messages.success(request, "Alert rule saved.")
            return redirect("costs_budgets")
        status = 422
    else:
        status = 200
    return render_page(request, "costs/alert_form.html", {"form": form, "rule": rule}, status=status)


@role_required(WORKFLOW_ADMIN)
@require_POST
def alert_rule_delete(request, pk: int):
    rule = get_in_scope(selectors.alert_rules_for(request.user), pk=pk)
    services.alert_rule_delete(rule=rule, actor=request.user)
    messages.success(request, "Alert rule deleted.")
    return redirect("costs_budgets")
