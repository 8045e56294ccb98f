"""Thin eval tasks: ids in, the runner and a service out. On the llm queue, so cases run with
the same concurrency as drafting."""
from __future__ import annotations

import logging

from celery import shared_task
from django.db import connection

from . import services
from .models import Case, CaseResult, EvalRun, RunState
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
    outcome, result = evaluate(spec, case.input)
    services.eval_case_done(run=run, case=case, outcome=outcome, failures=services.check_case(case, outcome),
                            result=result)


@shared_task(name="evals.tasks.drift_check")
def drift_check() -> int:
    """Periodic: re-run each current version's eval (the comparison runs when the last case lands)."""
    return len(services.drift_start_all())
