"""Calibration pages: read-only, for workflow admins and compliance."""
import csv

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from workflows import services
from workflows.models import DomainError
from workflows.roles import COMPLIANCE, WORKFLOW_ADMIN, has_role
from workflows.views.common import role_required

from . import monitor, selectors
from . import report as reports
from .forms import CalibrationForm, ReasonForm


@role_required(WORKFLOW_ADMIN, COMPLIANCE)
def calibration_index(request):
    workflows = selectors.workflows_for_calibration(request.user)
    return render(request, "calibration/index.html", {"workflows": workflows})


def _report(request, slug):
    workflow = selectors.workflow_for_calibration(request.user, slug)
    versions = list(workflow.versions.order_by("-number"))
    form = CalibrationForm(request.GET, versions=versions)
    if not form.is_valid():
        return workflow, form, None
    number = form.cleaned_data["version"] or versions[0].number
    version = next(v for v in versions if v.number == number)
    alpha = float(form.cleaned_data["alpha"] or form.fields["alpha"].initial) / 100
    return workflow, form, reports.build(version, alpha=alpha)


@role_required(WORKFLOW_ADMIN, COMPLIANCE)
def calibration_page(request, slug):
    workflow, form, report = _report(request, slug)
    context = {"workflow": workflow, "form": form, "report": report, "live": monitor.live_escape(workflow),
               "may_hold": has_role(request.user, WORKFLOW_ADMIN), "reason_form": ReasonForm()}
    return render(request, "calibration/page.html", context, status=200 if report else 400)


@role_required(WORKFLOW_ADMIN)
@require_POST
def automation_hold(request, slug):
    """The stop control: from now on every new draft of this workflow waits for a person."""
    return _hold_or_resume(request, slug, stop=True)


@role_required(WORKFLOW_ADMIN)
@require_POST
def automation_resume(request, slug):
    return _hold_or_resume(request, slug, stop=False)


def _hold_or_resume(request, slug, *, stop: bool):
    workflow = selectors.workflow_for_calibration(request.user, slug)
    form = ReasonForm(request.POST)
    try:
        if not form.is_valid():
            raise DomainError(" ".join(form.errors["reason"]))
        if stop:
            services.workflow_hold(workflow_id=workflow.pk, kind="stopped", reason=form.cleaned_data["reason"],
                                   actor=request.user)
            messages.success(request, f"Automation of {workflow.name} stopped: every new draft waits for a reviewer.")
        else:
            services.workflow_resume(workflow_id=workflow.pk, reason=form.cleaned_data["reason"], actor=request.user)
            messages.success(request, f"Automation of {workflow.name} resumed.")
    except DomainError as exc:
        messages.error(request, str(exc))
        return redirect("calibration_page", slug=slug)
    return redirect("calibration_page", slug=slug)


@role_required(WORKFLOW_ADMIN, COMPLIANCE)
def calibration_csv(request, slug):
    """The risk-coverage curve behind the chart, one row per threshold."""
    workflow, form, report = _report(request, slug)
    if report is None:
        return HttpResponse("; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()), status=400,
                            content_type="text/plain; charset=utf-8")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="calibration-{workflow.slug}-v{report.version.number}.csv"'
    writer = csv.writer(response)
    writer.writerow(["threshold", "labelled_covered", "bad_covered", "coverage", "escape_rate", "escape_rate_upper"])
    for p in report.curve:
        writer.writerow([f"{p.threshold:.6f}", p.covered, p.bad, f"{p.coverage:.6f}", f"{p.risk:.6f}", f"{p.risk_upper:.6f}"])
    return response


@role_required(WORKFLOW_ADMIN)
@require_POST
def apply_recommendation(request, slug):
    """The recommended threshold as a candidate version: recomputed here from the labels (the
    number in the form is never trusted), published only through the gate like any other."""
    workflow, form, report = _report(request, slug)
    if report is None or report.recommendation.threshold is None:
        messages.error(request, "There is no recommendation to apply for these settings.")
        return redirect("calibration_page", slug=slug)
    try:
        version, created = services.version_from_threshold(
            version_id=report.version.pk, auto_approve_at=report.recommendation.threshold, actor=request.user,
            note=f"calibration: {report.recommendation.sentence}"[:300])
    except DomainError as exc:
        messages.error(request, str(exc))
        return redirect("calibration_page", slug=slug)
    messages.success(request, f"Saved as candidate v{version.number} (auto-approve at "
                     f"{version.spec.routing.auto_approve_at:.2f}). Run its eval and publish it from the versions page."
                     if created else f"v{version.number} already has that threshold.")
    return redirect("calibration_page", slug=slug)
