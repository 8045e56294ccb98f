"""The workflow admin's version pages: the list with each version's state and last eval, the
YAML editor (checked as you type, the guided form previewed, the diff against the current
version), a dry run, publish through the gate, roll back. Thin views over services."""
from __future__ import annotations

import difflib

from django import forms
from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from workflows import services as workflow_services
from workflows.definitions import DefinitionError, parse_yaml
from workflows.forms import step_form_class
from workflows.models import DomainError
from workflows.roles import WORKFLOW_ADMIN
from workflows.views.common import render_page, role_required

from . import selectors, services

MAX_YAML_CHARS = 100_000


class EditorForm(forms.Form):
    source = forms.CharField(max_length=MAX_YAML_CHARS, strip=False, widget=forms.Textarea(attrs={"rows": 28, "spellcheck": "false"}))
    note = forms.CharField(max_length=300, required=False)


class PublishForm(forms.Form):
    reason = forms.CharField(max_length=500, error_messages={"required": "Say why this version should go out."})
    override = forms.CharField(max_length=500, required=False)


def _check(workflow, source: str) -> dict:
    """What the editor shows beside the text: the errors naming their key, or the preview of
    the guided form and the diff against the current version."""
    current = workflow.current_version
    diff = "\n".join(difflib.unified_diff((current.source_yaml if current else "").splitlines(), source.splitlines(),
                                          f"v{current.number}" if current else "nothing", "this draft", lineterm=""))
    try:
        spec = parse_yaml(source)
    except DefinitionError as exc:
        return {"errors": exc.errors, "diff": diff}
    if spec.slug != workflow.slug:
        return {"errors": [("slug", f"must stay {workflow.slug!r}: a new slug is a new workflow")], "diff": diff}
    steps = [{"title": step.title, "form": step_form_class(step)()} for step in spec.form.steps]
    return {"errors": [], "spec": spec, "steps": steps, "diff": diff}


@role_required(WORKFLOW_ADMIN)
def version_list(request, slug):
    workflow = selectors.workflow_for_evals(request.user, slug)
    current = workflow.current_version
    versions = selectors.versions_with_last_eval(workflow)
    context = {"workflow": workflow, "current": current, "versions": versions, "publish_form": PublishForm(),
               "cases": selectors.gate_cases(workflow)}
    return render(request, "evals/versions.html", context)


@role_required(WORKFLOW_ADMIN)
def version_editor(request, slug):
    workflow = selectors.workflow_for_evals(request.user, slug)
    base = workflow.versions.filter(number=request.GET.get("from") or 0).first() if request.GET.get("from", "").isdigit() else None
    base = base or workflow.current_version or workflow.versions.order_by("-number").first()
    if request.method == "POST":
        form = EditorForm(request.POST)
        if form.is_valid():
            check = _check(workflow, form.cleaned_data["source"])
            if not check["errors"]:
                version, created = workflow_services.version_candidate(
                    spec=check["spec"], source_yaml=form.cleaned_data["source"], actor=request.user,
                    note=form.cleaned_data["note"])
                if created:
                    messages.success(request, f"Saved as candidate v{version.number}. Run its eval, then publish it.")
                else:
                    messages.info(request, f"Nothing changed: this is v{version.number}'s definition.")
                return redirect("eval_versions", slug=slug)
        else:
            check = {"errors": [(name, " ".join(e)) for name, e in form.errors.items()], "diff": ""}
        return render(request, "evals/editor.html", {"workflow": workflow, "form": form, "check": check, "base": base},
                      status=400)
    source = base.source_yaml if base else ""
    form = EditorForm(initial={"source": source})
    return render(request, "evals/editor.html", {"workflow": workflow, "form": form, "check": _check(workflow, source),
                                                  "base": base})


@role_required(WORKFLOW_ADMIN)
@require_POST
def version_check(request, slug):
    """The editor's live check (htmx, as the admin types): only the partial."""
    workflow = selectors.workflow_for_evals(request.user, slug)
    source = request.POST.get("source", "")
    if len(source) > MAX_YAML_CHARS:
        check = {"errors": [("source", f"longer than {MAX_YAML_CHARS} characters")], "diff": ""}
    else:
        check = _check(workflow, source)
    return render_page(request, "evals/editor.html", {"workflow": workflow, "check": check}, partial="check",
                       status=200)


def _version(request, slug, number):
    workflow = selectors.workflow_for_evals(request.user, slug)
    return selectors.version_for(workflow, number)


@role_required(WORKFLOW_ADMIN)
@require_POST
def version_publish(request, slug, number):
    version = _version(request, slug, number)
    form = PublishForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(form.errors["reason"]))
        return redirect("eval_versions", slug=slug)
    try:
        workflow_services.version_publish(version_id=version.pk, actor=request.user, reason=form.cleaned_data["reason"],
                                          override=form.cleaned_data["override"])
    except workflow_services.PublishRefused as exc:
        messages.error(request, f"v{version.number} was not published: " + "; ".join(exc.reasons)
                       + ". Fix the candidate, or publish anyway with an override reason (recorded in the audit trail).")
        return redirect("eval_versions", slug=slug)
    except DomainError as exc:
        messages.error(request, str(exc))
        return redirect("eval_versions", slug=slug)
    messages.success(request, f"v{version.number} is now the current version"
                     + (" (gate overridden, recorded in the audit trail)." if form.cleaned_data["override"] else "."))
    return redirect("eval_versions", slug=slug)


@role_required(WORKFLOW_ADMIN)
@require_POST
def version_rollback(request, slug, number):
    """Copy an earlier published version as a new candidate and publish it through the gate;
    the gate asks for the copy's eval first, so the copy stays a candidate until it has one."""
    version = _version(request, slug, number)
    form = PublishForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(form.errors["reason"]))
        return redirect("eval_versions", slug=slug)
    try:
        published = workflow_services.version_rollback(to_version_id=version.pk, actor=request.user,
                                                       reason=form.cleaned_data["reason"], override=form.cleaned_data["override"])
    except workflow_services.PublishRefused as exc:
        messages.info(request, f"v{version.number}'s definition is saved as a new candidate; it was not published yet: "
                      + "; ".join(exc.reasons) + ".")
        return redirect("eval_versions", slug=slug)
    except DomainError as exc:
        messages.error(request, str(exc))
        return redirect("eval_versions", slug=slug)
    messages.success(request, f"Rolled back: v{published.number} (v{version.number}'s definition) is now current.")
    return redirect("eval_versions", slug=slug)


@role_required(WORKFLOW_ADMIN)
@require_POST
def version_dry_run(request, slug, number):
    """One case through the same pipeline, nothing created but the run's result."""
    version = _version(request, slug, number)
    case = selectors.gate_cases(version.workflow).filter(key=request.POST.get("case", "")).first()
    if case is None:
        messages.error(request, "Choose a case of the dataset to try the version on.")
        return redirect("eval_versions", slug=slug)
    run = services.eval_run_start(version=version, dataset=case.dataset, actor=request.user, cases=[case])
    return redirect("eval_run", pk=run.pk)
