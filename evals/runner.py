"""One case through the same pipeline as a submission, without creating one: `run()` and
`route()`, nothing written. Used by the eval task, `run_eval --in-process` and tests."""
from __future__ import annotations

from typing import Any

from workflows.definitions import WorkflowDefinition
from workflows.forms import cleaned_to_json, step_form_class
from workflows.pipeline.engines import default_engine
from workflows.pipeline.run import judge, run
from workflows.pipeline.types import RunOptions
from workflows.routing import route
from workflows.vocab import Finding

from .expectations import CaseError, Outcome


def intake(spec: WorkflowDefinition, raw: Any) -> dict[str, Any]:
    """A case's input checked as the guided form checks a submitter's: every step's form.
    Refusals name the field, so an imported case that no longer fits its workflow says why."""
    if not isinstance(raw, dict):
        raise CaseError([("input", "must be an object of form values")])
    known = {f.name for step in spec.form.steps for f in step.fields}
    errors = [(f"input.{name}", "no such field in this workflow") for name in raw if name not in known]
    values: dict[str, Any] = {}
    for step in spec.form.steps:
        # Form data as a browser sends it: an unticked box is absent, everything else text.
        data = {name: ("on" if value is True else value if isinstance(value, (str, list)) else str(value))
                for name, value in raw.items() if value is not None and value is not False}
        form = step_form_class(step)(data=data)
        if form.is_valid():
            values.update(cleaned_to_json(form.cleaned_data))
        else:
            errors.extend((f"input.{name}", " ".join(messages)) for name, messages in form.errors.items())
    if errors:
        raise CaseError(errors)
    return values


def evaluate(spec: WorkflowDefinition, raw_input: Any, *, engine=None, rubric: str | None = None) -> tuple[Outcome, Any]:
    """Draft one case and route it (never drawn for the audit sample). Returns the outcome in
    the terms expectations use, and the pipeline's DraftResult (None when the input was bad)."""
    try:
        values = intake(spec, raw_input)
    except CaseError as exc:
        return Outcome(content="", parsed=None, schema_valid=False, lane="", score=0.0, findings=(),
                       cost_usd=0, latency_ms=0, failure=f"the case's input does not fit the form: {exc}"), None
    # No cache: an eval measures the model as it answers today (drift under the same name).
    result = run(spec, values, engine=engine or default_engine(), options=RunOptions(use_cache=False))
    if result.failed:
        return Outcome(content="", parsed=None, schema_valid=False, lane="", score=0.0, findings=(),
                       cost_usd=result.cost_usd, latency_ms=result.latency_ms,
                       failure=f"{result.failure.kind}: {result.failure.detail}"[:500]), result
    decision = route(result.score, result.findings, spec.routing, draw=1.0, values=values)
    grade, note, extra_cost = None, "", 0
    if rubric:
        verdict = judge(spec, values, result.content, rubric, engine=engine or default_engine())
        grade, note = verdict.grade, verdict.error or "; ".join(verdict.problems)
        extra_cost = sum(c.cost_usd for c in verdict.calls)
    outcome = Outcome(
        content=result.content, parsed=result.parsed, schema_valid=Finding.SCHEMA_INVALID not in result.findings,
        lane=decision.lane, score=result.score, findings=tuple(result.findings), cost_usd=result.cost_usd + extra_cost,
        latency_ms=result.latency_ms, judge_grade=grade, judge_note=note[:1000],
    )
    return outcome, result
