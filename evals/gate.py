"""The publish gate (settings.REVIEWDESK_PUBLISH_GATE): a candidate is measured on its
workflow's gate dataset ("default") before it may become current.

Refused when its pass rate falls more than REVIEWDESK_EVAL_MARGIN below the current version's
on the same dataset, or when a "must not auto-approve" case would auto-approve. A workflow with
no dataset yet publishes "not measured" (its first version cannot have one: datasets belong to
a workflow); the audit event says so and the pages warn. The candidate's last finished run
decides: when it failed (evals/models.py RunState.FAILED) nothing was measured, and the gate
refuses until a new run finishes.
"""
from __future__ import annotations

from django.conf import settings

from workflows.models import WorkflowVersion
from workflows.services import GateResult

from . import services
from .models import Dataset, EvalRun, RunPurpose, RunState

MUST_NOT_AUTO_APPROVE = "auto-approved a case that must not be"


def _latest_run(version: WorkflowVersion, dataset: Dataset, *, states=(RunState.DONE,)) -> EvalRun | None:
    # A dry run (the editor's one chosen case) measures that case, not the version: a candidate
    # with one passing dry run and no real run would otherwise publish on one case's word.
    return (EvalRun.objects.filter(version=version, dataset=dataset, state__in=states)
            .exclude(purpose=RunPurpose.DRY_RUN).order_by("-finished_at", "-pk").first())


def failed_reason(run: EvalRun) -> str:
    """The gate's refusal for a candidate whose last run failed."""
    return f"the eval run failed: {run.failure_reason or 'no reason was recorded'}; run it again"


def check(version: WorkflowVersion, *, run_missing: bool = False) -> GateResult:
    dataset = Dataset.objects.filter(workflow=version.workflow, name=services.DEFAULT_DATASET).first()
    if dataset is None or not dataset.cases.exists():
        return GateResult(ok=True, measured=False, evidence={"note": "no eval dataset: nothing measured"})
    # The last run that ended, done or failed: an older good run does not stand in for a newer
    # failed one (the version is the same, but something went wrong that a person should see).
    run = _latest_run(version, dataset, states=(RunState.DONE, RunState.FAILED))
    if run is not None and run.state == RunState.FAILED and run_missing:
        run = None  # measured here and now instead, as a missing run would be
    if run is None:
        if not run_missing:
            return GateResult(ok=False, measured=False,
                              reasons=(f"v{version.number} has no finished eval on {dataset.name}: run it first",))
        run = services.eval_run_here(version, dataset)
    if run.state == RunState.FAILED:
        # A failed run measured nothing: never a pass, whatever its finished cases said.
        return GateResult(ok=False, measured=False, reasons=(failed_reason(run),),
                          evidence={"dataset": dataset.name, "run": run.pk, "run_failed": run.failure_reason})
    reasons = []
    escaped = sorted(r.case.key for r in run.results.select_related("case") if MUST_NOT_AUTO_APPROVE in r.failures)
    if escaped:
        reasons.append(f"{len(escaped)} case(s) that must not auto-approve would: {', '.join(escaped[:10])}")
    evidence = {"dataset": dataset.name, "run": run.pk, "pass_rate": run.pass_rate}
    current = version.workflow.current_version
    if current is not None and current.pk != version.pk:
        baseline = _latest_run(current, dataset) or (services.eval_run_here(current, dataset) if run_missing else None)
        if baseline is not None and baseline.state == RunState.FAILED:
            # Measured here and failed: the current version has no measurement, as before.
            evidence["baseline_run_failed"] = baseline.failure_reason
            baseline = None
        if baseline is None:
            evidence["baseline"] = f"v{current.number} has no finished eval on {dataset.name}: no comparison"
        else:
            evidence.update(baseline_version=current.number, baseline_run=baseline.pk, baseline_pass_rate=baseline.pass_rate)
            drop = (baseline.pass_rate or 0) - (run.pass_rate or 0)
            if drop > settings.REVIEWDESK_EVAL_MARGIN:
                reasons.append(f"pass rate {run.pass_rate:.1%} against v{current.number}'s {baseline.pass_rate:.1%}: a drop "
                               f"of {drop:.1%}, beyond the margin of {settings.REVIEWDESK_EVAL_MARGIN:.1%}")
    return GateResult(ok=not reasons, measured=True, reasons=tuple(reasons), evidence=evidence)
