"""``run()``: from validated form values to a scored draft, with no database writes.

The stages, in order (each a small function below, named as in docs/ARCHITECTURE.md):

    redact -> cache lookup -> budget check -> render -> call -> restore -> validate
    [-> repair] -> QA -> score -> [cascade]

The same function serves the generation task, eval runs and the editor's dry run: it takes
what it needs as arguments and returns a frozen DraftResult that the caller persists (or not).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings

from ..definitions import WorkflowDefinition
from ..jsonvalues import map_strings
from ..vocab import CallPurpose, FailureKind, Finding
from . import cache, confidence, pii, pricing
from .prompts import RenderedPrompt, render_prompt
from .types import (
    Attempt,
    CallRecord,
    DraftResult,
    Engine,
    EngineReply,
    Failure,
    ModelRequest,
    ModelUnavailable,
    RunOptions,
    Timeouts,
)
from .validators import Validation, validate_output


class _AllModelsFailed(Exception):
    def __init__(self, failures: list[ModelUnavailable]):
        self.failures = failures
        super().__init__("; ".join(str(f) for f in failures))


@dataclass(frozen=True)
class _Scored:
    """One answer carried through restore, validate and score."""

    reply: EngineReply
    content: str
    validation: Validation
    score: float
    components: dict[str, Any]

    def as_attempt(self) -> Attempt:
        return Attempt(
            purpose=self.reply.calls[-1].purpose if self.reply.calls else CallPurpose.DRAFT,
            model=self.reply.model_reported,
            content=self.content,
            score=self.score,
            findings=tuple(self.validation.findings),
            finding_details=dict(self.validation.details),
        )


def run(
    spec: WorkflowDefinition,
    values: dict[str, Any],
    *,
    engine: Engine,
    feedback: str = "",
    options: RunOptions = RunOptions(),
) -> DraftResult:
    redaction = redact_stage(spec, values)
    masked_feedback = redaction.mask(feedback)
    prompt = render_stage(spec, redaction.values, masked_feedback)
    calls: list[CallRecord] = []
    models = model_chain(spec)
    cached = cache_lookup_stage(spec, prompt, models[0], options) if not feedback else None
    budget_check_stage(spec)
    if cached is not None:
        calls.extend(cached.calls)
    try:
        reply = cached or call_stage(spec, prompt, models, engine, redaction, calls, CallPurpose.DRAFT)
    except _AllModelsFailed as exc:
        return _failed(spec, exc, calls)
    attempt = finish_stage(spec, reply, redaction)
    earlier: list[Attempt] = []
    if _needs_repair(attempt):
        earlier.append(attempt.as_attempt())
        repaired = repair_stage(spec, prompt, attempt, models, engine, redaction, calls)
        if repaired is not None:
            attempt = repaired
    attempt = qa_stage(spec, attempt)
    if _needs_cascade(spec, attempt):
        escalated = cascade_stage(spec, prompt, engine, redaction, calls)
        if escalated is not None:
            earlier.append(attempt.as_attempt())
            attempt = escalated
    if cached is None and attempt.reply is reply and not attempt.validation.findings:
        cache_store_stage(spec, prompt, models[0], reply, options)
    return _result(spec, attempt, calls, redaction, cache_hit=cached is not None and attempt.reply is cached,
                   earlier=earlier)


# --- stages, in order ----------------------------------------------------------------------


def redact_stage(spec: WorkflowDefinition, values: dict[str, Any]) -> pii.Redaction:
    return pii.redact(spec, values)


def cache_lookup_stage(spec, prompt: RenderedPrompt, model: str, options: RunOptions) -> EngineReply | None:
    if not (options.use_cache and cache.cacheable(spec)):
        return None
    return cache.lookup(cache.key_for(spec, prompt, model))


def budget_check_stage(spec: WorkflowDefinition) -> None:
    """Budgets arrive with the cost issue; until then nothing stops a call here."""


def render_stage(spec: WorkflowDefinition, redacted_values: dict[str, Any], feedback: str) -> RenderedPrompt:
    return render_prompt(spec, redacted_values, feedback=feedback)


def model_chain(spec: WorkflowDefinition) -> list[str]:
    return [spec.model.name or settings.REVIEWDESK_DEFAULT_MODEL, *spec.model.fallback]


def _request(spec, prompt: RenderedPrompt, model: str, redaction: pii.Redaction, purpose: CallPurpose) -> ModelRequest:
    return ModelRequest(
        model=model,
        system=prompt.system,
        user=prompt.user,
        json_schema=spec.output.json_schema if spec.output.format == "json" else None,
        temperature=spec.model.temperature,
        max_tokens=spec.model.max_tokens,
        timeouts=Timeouts(connect=settings.REVIEWDESK_LLM_CONNECT_TIMEOUT, total=settings.REVIEWDESK_LLM_TIMEOUT),
        purpose=purpose,
        values=redaction.values,
        field_names=tuple(f.name for f in spec.form.all_fields()),
    )


def call_stage(spec, prompt, models, engine: Engine, redaction, calls: list[CallRecord], purpose: CallPurpose) -> EngineReply:
    """Try each model in turn (primary, then the fallbacks); the engine retries within one."""
    failures: list[ModelUnavailable] = []
    for model in models:
        try:
            reply = engine.complete(_request(spec, prompt, model, redaction, purpose))
        except ModelUnavailable as exc:
            calls.extend(_priced(exc.calls))
            failures.append(exc)
            continue
        priced = _priced(reply.calls)
        calls.extend(priced)
        return replace(reply, calls=tuple(priced))
    raise _AllModelsFailed(failures)


def restore_stage(spec: WorkflowDefinition, content: str, redaction: pii.Redaction) -> str:
    return pii.restore(content, redaction, is_json=spec.output.format == "json")


def validate_stage(spec: WorkflowDefinition, reply: EngineReply, content: str, redaction: pii.Redaction) -> Validation:
    validation = validate_output(spec, content)
    validation.parsed = map_strings(validation.parsed, _without_nul)
    if reply.finish_reason == "length":
        validation.add(Finding.TRUNCATED, f"the model stopped at max_tokens ({spec.model.max_tokens})")
    if unresolved := redaction.unresolved(content):
        validation.add(Finding.UNRESOLVED_PLACEHOLDER, f"placeholders left in the answer: {', '.join(unresolved)}")
    return validation


def finish_stage(spec, reply: EngineReply, redaction) -> _Scored:
    """restore -> validate -> score for one answer."""
    # PostgreSQL text and jsonb cannot hold NUL; a model can emit one, raw or as \u0000 in JSON.
    content = _without_nul(restore_stage(spec, reply.content, redaction))
    validation = validate_stage(spec, reply, content, redaction)
    return score_stage(spec, reply, content, validation)


def repair_stage(spec, prompt, attempt: _Scored, models, engine, redaction, calls) -> _Scored | None:
    """One regeneration with the validation error fed back (parse or schema failures only)."""
    error = attempt.validation.details.get(Finding.SCHEMA_INVALID, "")
    repair_prompt = RenderedPrompt(
        system=prompt.system,
        user=prompt.user
        + "\n\nYour previous answer could not be used: "
        + error
        + "\nAnswer again with a single JSON object that matches the schema exactly.",
    )
    try:
        reply = call_stage(spec, repair_prompt, models, engine, redaction, calls, CallPurpose.REPAIR)
    except _AllModelsFailed:
        return None
    return finish_stage(spec, reply, redaction)


def qa_stage(spec: WorkflowDefinition, attempt: _Scored) -> _Scored:
    """The optional grading call arrives with the QA key; until then the draft passes as is."""
    return attempt


def score_stage(spec, reply: EngineReply, content: str, validation: Validation) -> _Scored:
    value, components = confidence.score(reply, validation)
    components["validator_details"] = dict(validation.details)
    return _Scored(reply=reply, content=content, validation=validation, score=value, components=components)


def cascade_stage(spec, prompt, engine, redaction, calls) -> _Scored | None:
    """Re-draft once with model.escalate_to before a human sees a weak draft."""
    try:
        reply = call_stage(spec, prompt, [spec.model.escalate_to], engine, redaction, calls, CallPurpose.CASCADE)
    except _AllModelsFailed:
        return None
    return finish_stage(spec, reply, redaction)


def cache_store_stage(spec, prompt, model: str, reply: EngineReply, options: RunOptions) -> None:
    if options.use_cache and cache.cacheable(spec):
        cache.store(cache.key_for(spec, prompt, model), reply)


# --- helpers ---------------------------------------------------------------------------------


def _needs_repair(attempt: _Scored) -> bool:
    return Finding.SCHEMA_INVALID in attempt.validation.findings


def _needs_cascade(spec: WorkflowDefinition, attempt: _Scored) -> bool:
    return bool(spec.model.escalate_to) and (
        attempt.score < spec.routing.block_below or Finding.QA_FAILED in attempt.validation.findings
    )


def _priced(calls: tuple[CallRecord, ...]) -> list[CallRecord]:
    return [replace(c, cost_usd=pricing.cost_of(c)) for c in calls]


def _without_nul(text: str) -> str:
    return text.replace("\x00", "\ufffd") if isinstance(text, str) else text


def _result(spec, attempt: _Scored, calls, redaction, *, cache_hit: bool, earlier: list[Attempt]) -> DraftResult:
    reply = attempt.reply
    components = dict(attempt.components)
    if cache_hit:
        components["cache_hit"] = True
    return DraftResult(
        engine=reply.engine,
        model=reply.model_reported,
        model_requested=reply.model_requested,
        content=attempt.content,
        parsed=attempt.validation.parsed,
        score=attempt.score,
        components=components,
        findings=tuple(attempt.validation.findings),
        finding_details=dict(attempt.validation.details),
        calls=tuple(calls),
        cache_hit=cache_hit,
        redacted=tuple(redaction.fields),
        pii_mode=spec.pii,
        earlier_attempts=tuple(earlier),
    )


def _failed(spec, exc: _AllModelsFailed, calls: list[CallRecord]) -> DraftResult:
    retryable = all(f.retryable for f in exc.failures)
    kind = FailureKind.PROVIDER_UNAVAILABLE if retryable else FailureKind.PROVIDER_REFUSED
    return DraftResult(
        engine=calls[-1].engine if calls else "",
        model="",
        model_requested=model_chain(spec)[0],
        content="",
        parsed=None,
        score=0.0,
        components={},
        findings=(),
        finding_details={},
        calls=tuple(calls),
        pii_mode=spec.pii,
        failure=Failure(kind=kind, detail=json.dumps([str(f) for f in exc.failures])[:4000]),
    )
