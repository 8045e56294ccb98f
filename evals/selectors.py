"""Reads of the evals app, scoped to the user asking: workflow admins see every workflow's
datasets and runs; nobody else sees them (404)."""
from __future__ import annotations

from django.db.models import Count, QuerySet

from workflows.denials import get_in_scope
from workflows.models import Workflow, WorkflowVersion
from workflows.roles import WORKFLOW_ADMIN, has_role

from .models import Case, CaseResult, Dataset, EvalRun, RunState
from .services import DEFAULT_DATASET


def workflows_for_evals(user) -> QuerySet[Workflow]:
    if not has_role(user, WORKFLOW_ADMIN):
        return Workflow.objects.none()
    return Workflow.objects.filter(versions__isnull=False).distinct().order_by("name")


def workflow_for_evals(user, slug: str) -> Workflow:
    return get_in_scope(workflows_for_evals(user), slug=slug)


def datasets_of(workflow: Workflow) -> QuerySet[Dataset]:
    return workflow.eval_datasets.annotate(case_count=Count("cases")).order_by("name")


def dataset_for(user, slug: str, name: str) -> Dataset:
    return get_in_scope(Dataset.objects.filter(workflow__in=workflows_for_evals(user)).select_related("workflow"),
                        workflow__slug=slug, name=name)


def cases_of(dataset: Dataset) -> QuerySet[Case]:
    return dataset.cases.select_related("created_by").order_by("key")


def runs_of(workflow: Workflow) -> QuerySet[EvalRun]:
    return EvalRun.objects.filter(version__workflow=workflow).select_related("version", "dataset", "started_by")


def run_for(user, pk: int) -> EvalRun:
    return get_in_scope(EvalRun.objects.filter(version__workflow__in=workflows_for_evals(user))
                        .select_related("version__workflow", "dataset"), pk=pk)


def results_of(run: EvalRun) -> QuerySet[CaseResult]:
    """Failures first: they are what the reader came for."""
    return run.results.select_related("case").order_by("passed", "case__key")


def version_for(workflow: Workflow, number) -> WorkflowVersion:
    return get_in_scope(workflow.versions.all(), number=number)


def versions_with_last_eval(workflow: Workflow) -> list[WorkflowVersion]:
    """Every version, newest first, each with its last finished run on the gate dataset: done,
    or failed (then the gate refuses it, evals/gate.py, and the page says so)."""
    versions = list(workflow.versions.select_related("created_by", "published_by").order_by("-number"))
    runs = {}
    for run in EvalRun.objects.filter(version__workflow=workflow, dataset__name=DEFAULT_DATASET,
                                      state__in=[RunState.DONE, RunState.FAILED],
                                      total__gt=1).order_by("finished_at", "pk"):
        runs[run.version_id] = run
    for version in versions:
        version.last_eval = runs.get(version.pk)
    return versions


def gate_cases(workflow: Workflow) -> QuerySet[Case]:
    return Case.objects.filter(dataset__workflow=workflow, dataset__name=DEFAULT_DATASET).order_by("key")
