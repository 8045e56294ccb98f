"""Thin eval tasks: ids in, the runner and a service out. On the llm queue, so cases run with
the same concurrency as drafting."""
from __future__ import annotations

import logging

from celery import shared_task
from django.contrib.auth import get_user_model
from django.db import InterfaceError, OperationalError, connection

from . import services
from .judge import measure
from .models import Case, CaseResult, Dataset, EvalRun, RunState
from .runner import evaluate

log = logging.getLogger(__name__)


@shared_task(acks_late=True, name=services.RUN_EVAL_CASE)
def run_eval_case(run_id: int, case_id: int) -> None:
    run = EvalRun.objects.select_related("version").filter(pk=run_id).first()
    case = Case.objects.filter(pk=case_id).first()
    if run is None or case is None or run.state != RunState.RUNNING:
        return
    if CaseResult.objects.filter(run=run, case=case).exists():
        return  # a redelivery: already counted
    spec = run.version.spec
    if not connection.in_atomic_block:
        connection.close()  # as generate_draft: no connection held across the model call
    try:
        outcome, result = evaluate(spec, case.input, rubric=services.rubric_of(case))
        failures, judged = services.check_case(case, outcome, trust_judge=services.judge_trusted(run.dataset))
        services.eval_case_done(run=run, case=case, outcome=outcome, failures=failures, result=result, judged=judged)
    except (OperationalError, InterfaceError):
        # The database was away for a moment: the case has no result, and the sweep sends it again
        # once the run stalls. The run is not at fault.
        raise
    except Exception as exc:
        # Anything else escaped the per-case handling (a model that fails is a failed case, not
        # this): a fault that the same case would hit again on every re-send. The run stops now
        # with the reason instead of being re-sent by the sweep; raised on for the worker's log.
        services.eval_run_fail(run_id=run.pk, reason=services.unexpected_error(case, exc))
        raise


@shared_task(name="evals.tasks.sweep_stalled_eval_runs")
def sweep_stalled_eval_runs() -> dict:
    """Periodic: re-send the missing cases of eval runs whose worker died (services.eval_runs_sweep)."""
    return services.eval_runs_sweep()


@shared_task(name="evals.tasks.drift_check")
def drift_check() -> int:
    """Periodic: re-run each current version's eval (the comparison runs when the last case lands)."""
    return len(services.drift_start_all())


@shared_task(acks_late=True, name="evals.tasks.measure_judge")
def measure_judge(dataset_id: int, user_id: int | None = None) -> None:
    """The judge's agreement with reviewers on a dataset's reviewed cases (model calls: a task)."""
    dataset = Dataset.objects.filter(pk=dataset_id).first()
    if dataset is not None:
        measure(dataset, actor=get_user_model().objects.filter(pk=user_id).first() if user_id else None)
