"""Submissions and their drafts: create, claim for generation, record, fail."""
from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from .. import audit
from ..definitions import WorkflowDefinition
from ..jsonvalues import map_strings
from ..llm import confidence
from ..llm.types import Completion, ModelFailure
from ..models import Draft, Lane, LLMCall, ReviewTask, Submission, SubmissionState, WorkflowVersion
from ..roles import system_user
from ..routing import route, sample_draw_for
from .common import release, track

log = logging.getLogger(__name__)


def submission_create(*, version: WorkflowVersion, user, data: dict[str, Any], idempotency_key: str = "") -> Submission:
    """Save a submission and enqueue its generation once the transaction commits."""
    from ..tasks import enqueue_generation

    if idempotency_key:
        existing = Submission.objects.filter(submitted_by=user, idempotency_key=idempotency_key).first()
        if existing:
            return existing
    try:
        with transaction.atomic():
            submission = Submission(
                workflow_version=version, submitted_by=user, data=data, idempotency_key=idempotency_key
            )
            track(submission, user, "submitted").save()
            audit.record(
                action="submission.created",
                obj=submission,
                actor=user,
                workflow_version=version,
                payload={"input_hash": audit.content_hash(audit.canonical_json(data))},
            )
            transaction.on_commit(partial(enqueue_generation, submission.pk))
    except IntegrityError:
        # Two requests with the same Idempotency-Key raced; the other one won.
        existing = Submission.objects.filter(submitted_by=user, idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return existing
    return submission


def generation_requeued(*, submission_ids: list[int]) -> None:
    """Note that the sweep re-sent these, so the next sweep waits another grace period
    instead of queueing a message every minute while the worker is busy.

    A timestamp nudge, not a domain change: a plain UPDATE without a history row. Claims that
    are being taken over keep their start time, or the re-sent task would find them fresh.
    """
    Submission.objects.filter(
        pk__in=submission_ids, state__in=[SubmissionState.SUBMITTED, SubmissionState.REGENERATING]
    ).update(updated_at=timezone.now())


@transaction.atomic
def generation_claim(*, submission_id: int) -> Submission | None:
    """Claim a submission for generation. Returns None when there is nothing to do.

    A redelivered task finds the submission already claimed (or done) and returns None; a
    claim older than the stale limit is taken over, because its worker died mid-call.
    """
    stale_before = timezone.now() - timedelta(seconds=settings.REVIEWDESK_GENERATION_STALE_SECONDS)
    claimable = Q(state__in=[SubmissionState.SUBMITTED, SubmissionState.REGENERATING]) | Q(
        state=SubmissionState.GENERATING, generation_started_at__lt=stale_before
    )
    submission = (
        Submission.objects.select_for_update(skip_locked=True).filter(claimable, pk=submission_id).first()
    )
    if submission is None:
        return None
    retaken = submission.state == SubmissionState.GENERATING
    if not retaken:
        submission.transition_to(SubmissionState.GENERATING)
    submission.attempts += 1
    submission.generation_started_at = timezone.now()
    system = system_user()
    track(submission, system, f"generation attempt {submission.attempts}").save()
    audit.record(
        action="draft.generation_started",
        obj=submission,
        actor=system,
        workflow_version=submission.workflow_version,
        payload={"attempt": submission.attempts, "retaken_stale_claim": retaken},
    )
    return submission


def _review_due(spec: WorkflowDefinition, lane: str):
    minutes = spec.routing.sla_minutes.get(lane)
    return timezone.now() + timedelta(minutes=minutes) if minutes else None


def _record_failed_calls(submission: Submission, attempt: int, engine: str, failures: list[ModelFailure]) -> None:
    # Each model that failed was a request of its own; cost and reliability figures per model
    # need a row for it, not a note on the successful call.
    LLMCall.objects.bulk_create(
        LLMCall(submission=submission, attempt=attempt, engine=engine, model=f.model, ok=False, error=str(f)[:4000])
        for f in failures
    )


def _without_nul(text: str) -> str:
    return text.replace("\x00", "\ufffd")


@transaction.atomic
def draft_record(*, submission_id: int, attempt: int, completion: Completion) -> Draft | None:
    """Store a draft, score it, route it and release it as its lane says.

    Returns None (and changes nothing) when this attempt is no longer the current one.
    """
    submission = Submission.objects.select_for_update(of=("self",)).select_related("workflow_version").get(pk=submission_id)
    if submission.state != SubmissionState.GENERATING or submission.attempts != attempt:
        log.info("draft for submission %s attempt %s is stale; dropped", submission_id, attempt)
        return None
    spec = submission.workflow_version.spec
    system = system_user()
    # PostgreSQL text and jsonb cannot hold NUL; a model can emit one, raw or as \u0000 in
    # JSON. Keep the rest of the answer.
    completion.content = _without_nul(completion.content)
    validation = confidence.validate_output(spec, completion.content)
    validation.parsed = map_strings(validation.parsed, _without_nul)
    for code, detail in completion.findings.items():
        validation.add(code, detail)
    score, components = confidence.score(completion, validation)
    components["validator_details"] = validation.details
    policy = spec.routing
    decision = route(
        score,
        validation.findings,
        auto_approve_at=policy.auto_approve_at,
        block_below=policy.block_below,
        always_block_on=policy.always_block_on,
        audit_sample_rate=policy.audit_sample_rate,
        sample_draw=sample_draw_for(submission.pk, attempt),
    )
    components["routing_reason"] = decision.reason
    draft = Draft(
        submission=submission,
        attempt=attempt,
        engine=completion.engine,
        model=completion.model,
        content=completion.content,
        parsed=validation.parsed,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        latency_ms=completion.latency_ms,
        score=score,
        score_components=components,
        findings=validation.findings,
        lane=decision.lane,
        content_hash=audit.content_hash(completion.content),
    )
    track(draft, system, "draft generated").save()
    _record_failed_calls(submission, attempt, completion.engine, completion.failures)
    LLMCall.objects.create(
        submission=submission,
        attempt=attempt,
        engine=completion.engine,
        model=completion.model,
        ok=True,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        latency_ms=completion.latency_ms,
    )
    version = submission.workflow_version
    audit.record(
        action="draft.generated",
        obj=draft,
        actor=system,
        workflow_version=version,
        payload={
            "submission_id": submission.pk,
            "attempt": attempt,
            "engine": completion.engine,
            "model": completion.model,
            "draft_hash": draft.content_hash,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "latency_ms": completion.latency_ms,
            "failed_models": [str(f) for f in completion.failures],
            "pii_redacted_fields": completion.redacted_fields,
        },
    )
    submission.transition_to(SubmissionState.ROUTED)
    submission.lane = decision.lane
    submission.generation_started_at = None
    audit.record(
        action="draft.routed",
        obj=submission,
        actor=system,
        workflow_version=version,
        payload={
            "draft_id": draft.pk,
            "lane": decision.lane,
            "score": score,
            "findings": validation.findings,
            "sampled_for_audit": decision.sampled_for_audit,
            "reason": decision.reason,
        },
    )
    if decision.lane in (Lane.AUTO_APPROVE, Lane.ASYNC_REVIEW):
        release(submission, text=completion.content, actor=system, reason=f"lane {decision.lane}")
    if decision.lane == Lane.AUTO_APPROVE:
        submission.transition_to(SubmissionState.APPROVED)
        audit.record(
            action="review.auto_approved",
            obj=submission,
            actor=system,
            workflow_version=version,
            payload={"draft_id": draft.pk, "score": score},
        )
    if decision.lane != Lane.AUTO_APPROVE or decision.sampled_for_audit:
        review_lane = decision.lane if decision.lane != Lane.AUTO_APPROVE else Lane.ASYNC_REVIEW
        task = ReviewTask(
            submission=submission,
            draft=draft,
            lane=review_lane,
            sampled=decision.sampled_for_audit,
            due_at=_review_due(spec, review_lane),
        )
        track(task, system, "review queued").save()
    track(submission, system, f"routed to {decision.lane}").save()
    return draft


@transaction.atomic
def generation_fail(*, submission_id: int, attempt: int, reason: str, failures: list[ModelFailure] = ()) -> None:
    submission = Submission.objects.select_for_update(of=("self",)).get(pk=submission_id)
    if submission.state != SubmissionState.GENERATING or submission.attempts != attempt:
        return
    system = system_user()
    # Failures come only from the provider client; the offline engine cannot fail this way.
    _record_failed_calls(submission, attempt, "openai", failures)
    submission.transition_to(SubmissionState.FAILED)
    submission.failure_reason = reason[:4000]
    submission.generation_started_at = None
    track(submission, system, "generation failed").save()
    audit.record(
        action="draft.failed",
        obj=submission,
        actor=system,
        workflow_version=submission.workflow_version,
        payload={"attempt": attempt, "error": reason[:1000]},
    )
