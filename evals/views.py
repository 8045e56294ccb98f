"""Eval pages for workflow admins, and the reviewer's one-click case. Thin: a scoped lookup,
a form, one service call."""
from django.contrib import messages
from django.http import StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from workflows import selectors as workflow_selectors
from workflows.models import DomainError
from workflows.roles import REVIEWER, WORKFLOW_ADMIN
from workflows.views.common import paginate, render_page, role_required

from . import judge, selectors, services
from .expectations import CaseError
from .forms import ImportForm, RunForm
from .jsonl import write_cases
from .models import RunState
from .summary import ORDER, compare, summarise
from .tasks import measure_judge


@role_required(WORKFLOW_ADMIN)
def eval_index(request):
    return render(request, "evals/index.html", {"workflows": selectors.workflows_for_evals(request.user)})


def _workflow_context(request, workflow, *, run_form=None, import_form=None):
    versions = list(workflow.versions.order_by("-number"))
    datasets = list(selectors.datasets_of(workflow))
    for dataset in datasets:
        dataset.judge = judge.latest(dataset)
        dataset.judge_trusted = judge.shows_trust(dataset.judge)
        dataset.reviewed_with_rubric = len(judge.reviewed_cases(dataset))
    return {
        "judge_min_cases": judge.MIN_CASES, "judge_min_agreement": judge.MIN_AGREEMENT,
        "workflow": workflow,
        "datasets": datasets,
        "runs": paginate(request, selectors.runs_of(workflow).order_by("-started_at", "-pk"), per_page=20),
        "run_form": run_form or RunForm(versions=versions, datasets=datasets),
        "import_form": import_form or ImportForm(),
    }


@role_required(WORKFLOW_ADMIN)
def eval_workflow(request, slug):
    workflow = selectors.workflow_for_evals(request.user, slug)
    return render(request, "evals/workflow.html", _workflow_context(request, workflow))


@role_required(WORKFLOW_ADMIN)
@require_POST
def eval_run_create(request, slug):
    workflow = selectors.workflow_for_evals(request.user, slug)
    versions = list(workflow.versions.all())
    datasets = list(selectors.datasets_of(workflow))
    form = RunForm(request.POST, versions=versions, datasets=datasets)
    if not form.is_valid():
        return render(request, "evals/workflow.html", _workflow_context(request, workflow, run_form=form), status=400)
    version = next(v for v in versions if v.number == form.cleaned_data["version"])
    dataset = next(d for d in datasets if d.name == form.cleaned_data["dataset"])
    try:
        run = services.eval_run_start(version=version, dataset=dataset, actor=request.user)
    except DomainError as exc:
        form.add_error(None, str(exc))
        return render(request, "evals/workflow.html", _workflow_context(request, workflow, run_form=form), status=409)
    return redirect("eval_run", pk=run.pk)


@role_required(WORKFLOW_ADMIN)
@require_POST
def eval_import(request, slug):
    workflow = selectors.workflow_for_evals(request.user, slug)
    form = ImportForm(request.POST, request.FILES)
    if form.is_valid():
        dataset = services.dataset_for(workflow, form.cleaned_data["dataset"])
        try:
            created, replaced = services.cases_import(dataset=dataset, text=form.cleaned_data["file"], actor=request.user)
        except CaseError as exc:
            for key, reason in exc.errors:
                form.add_error("file", f"{key}: {reason}" if key else reason)
        else:
            messages.success(request, f"{dataset.name}: {created} cases added, {replaced} replaced.")
            return redirect("eval_dataset", slug=slug, name=dataset.name)
    context = _workflow_context(request, workflow, import_form=form)
    return render(request, "evals/workflow.html", context, status=400)


@role_required(WORKFLOW_ADMIN)
def eval_dataset(request, slug, name):
    dataset = selectors.dataset_for(request.user, slug, name)
    page = paginate(request, selectors.cases_of(dataset).order_by("key", "pk"))
    return render(request, "evals/dataset.html", {"dataset": dataset, "page": page})


@role_required(WORKFLOW_ADMIN)
def eval_dataset_export(request, slug, name):
    dataset = selectors.dataset_for(request.user, slug, name)
    response = StreamingHttpResponse(write_cases(selectors.cases_of(dataset).iterator(chunk_size=500)),
                                     content_type="application/jsonl; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{dataset.workflow.slug}-{dataset.name}.jsonl"'
    return response


@role_required(WORKFLOW_ADMIN)
def eval_run(request, pk):
    run = selectors.run_for(request.user, pk)
    context = {
        "run": run,
        "summary": summarise(run),
        "results": paginate(request, selectors.results_of(run).order_by("passed", "case__key", "pk")),
        "others": selectors.runs_of(run.version.workflow).filter(dataset=run.dataset).exclude(pk=run.pk)[:20],
        "may_run_again": services.may_run_again(request.user, run),
    }
    response = render_page(request, "evals/run.html", context, partial="progress")
    if request.htmx and run.state != RunState.RUNNING:
        # The poll that sees the run end (done or failed) reloads the page once, so the case
        # table is whole.
        response["HX-Refresh"] = "true"
    return response


@role_required(WORKFLOW_ADMIN)
def eval_compare(request, pk, other):
    after = selectors.run_for(request.user, pk)
    before = selectors.run_for(request.user, other)
    changes = compare(before, after)
    counts = {}
    for change in changes:
        counts[change.kind] = counts.get(change.kind, 0) + 1
    page = paginate(request, changes)
    before_summary, after_summary = summarise(before), summarise(after)
    chart = {"kinds": [{"kind": kind, "cases": counts.get(kind, 0)} for kind in ORDER],
             "pass_rates": [{"run": f"#{before.pk} v{before.version.number}", "rate": before_summary.pass_rate},
                            {"run": f"#{after.pk} v{after.version.number}", "rate": after_summary.pass_rate}]}
    return render(request, "evals/compare.html", {"before": before, "after": after, "page": page, "counts": counts,
                                                  "before_summary": before_summary, "after_summary": after_summary,
                                                  "chart": chart})


@role_required(REVIEWER)
@require_POST
def eval_case_from_review(request, task_id):
    task = workflow_selectors.review_task_for(request.user, task_id)
    try:
        case = services.case_from_review(task_id=task.pk, user=request.user)
    except DomainError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Added to the {case.dataset.workflow.name} eval dataset as {case.key} ({case.get_provenance_display()}).")
    return redirect("review_detail", pk=task.pk)




@role_required(WORKFLOW_ADMIN)
@require_POST
def eval_measure_judge(request, slug, name):
    """Grade the dataset's reviewed cases with the judge, on a worker (model calls)."""
    dataset = selectors.dataset_for(request.user, slug, name)
    if not judge.reviewed_cases(dataset):
        messages.error(request, "No reviewed case with a rubric in this dataset: add cases from reviews first.")
    else:
        measure_judge.delay(dataset.pk, request.user.pk)
        messages.success(request, "The judge is grading the reviewed cases; its agreement appears here when done.")
    return redirect("eval_workflow", slug=slug)
