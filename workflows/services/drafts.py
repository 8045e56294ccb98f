"""Submissions and their drafts: create, claim for generation, record, fail."""
from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models.functions import Now
from django.utils import timezone

from .. import audit
from ..definitions import WorkflowDefinition
from ..dispatch import enqueue_generation
from ..gate import generation_hold
from ..models import DomainError, Draft, LLMCall, ReviewTask, Submission, SubmissionState, WorkflowVersion
from ..pipeline.types import CallRecord, DraftResult
from ..queue import review_task_fields
from ..roles import REVIEWER, group_names, has_role, system_user
from ..routing import effects_of, route, sample_draw_for
from ..vocab import AuditAction
from .common import release, track

log = logging.getLogger(__name__)


def submission_create(*, version: WorkflowVersion, user, data: dict[str, Any], idempotency_key: str = "") -> Submission:
    """Save a submission and enqueue its generation once the transaction commits."""
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
                action=AuditAction.SUBMISSION_CREATED,
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
    Submission.objects.filter(pk__in=submission_ids).waiting_for_worker().update(updated_at=timezone.now())


@transaction.atomic
def generation_claim(*, submission_id: int) -> Submission | None:
    """Claim a submission for generation. Returns None when there is nothing to do.

    A redelivered task finds the submission already claimed (or done) and returns None; a
    claim whose heartbeat stopped (or older than the hard stale limit) is taken over, because
    its worker died mid-call. The row is locked with SKIP LOCKED and the staleness re-checked
    under the lock, so of two tasks racing for one stale claim exactly one wins: the other
    either skips the locked row or, once the winner has committed, sees a fresh heartbeat.
    """
    stale_before = timezone.now() - timedelta(seconds=settings.REVIEWDESK_GENERATION_STALE_SECONDS)
    submission = (
        Submission.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("workflow_version")
        .claimable(stale_before=stale_before)
        .filter(pk=submission_id)
        .first()
    )
    if submission is None:
        return None
    retaken = submission.is_generating
    # A claim taken over was allowed when it began; a new one asks the gate (a spent budget
    # with a hard stop pauses it: kept, and resumed by generation_resume). The answer may be a
    # few seconds old (workflows/gate.py): one cache read per claim, not the budget's queries.
    hold = None if retaken else generation_hold(workflow_id=submission.workflow_version.workflow_id, cached=True)
    if hold:
        _pause(submission, hold)
        return None
    if not retaken:
        submission.transition_to(SubmissionState.GENERATING)
    submission.attempts += 1
    submission.generation_started_at = timezone.now()
    system = system_user()
    # The first heartbeat, on the database's clock (workflows/heartbeat.py), in the claim's own
    # UPDATE; the history leaves the field out.
    submission.claim_heartbeat_at = Now()
    track(submission, system, f"generation attempt {submission.attempts}").save(
        update_fields=[*_CLAIM_FIELDS, "claim_heartbeat_at"])
    audit.record(
        action=AuditAction.DRAFT_GENERATION_STARTED,
        obj=submission,
        actor=system,
        workflow_version=submission.workflow_version,
        payload={"attempt": submission.attempts, "retaken_stale_claim": retaken},
    )
    return submission


def _pause(submission: Submission, reason: str) -> None:
    system = system_user()
    submission.transition_to(SubmissionState.PAUSED)
    track(submission, system, f"generation paused: {reason}").save(update_fields=["state", "updated_at"])
    audit.record(
        action=AuditAction.GENERATION_PAUSED,
        obj=submission,
        actor=system,
        workflow_version=submission.workflow_version,
        payload={"reason": reason, "after_attempt": submission.attempts},
    )


def generation_resume(*, workflow_id: int, reason: str, actor=None, limit: int = 500) -> list[int]:
    """Send paused submissions of a workflow back to the worker, oldest first; none is dropped.

    Called by the app that paused them (costs: when a budget is raised, and by its periodic
    task when the month turns). Each one is claimed again through the gate, so a budget raised
    by less than the backlog needs pauses the rest again rather than overspending.
    Rows locked by another resume are skipped; they are that one's to resume.
    """
    who = actor or system_user()
    with transaction.atomic(), audit.batch():
        paused = list(
            Submission.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("workflow_version")
            .paused()
            .filter(workflow_version__workflow_id=workflow_id)
            .order_by("created_at")[:limit]
        )
        for submission in paused:
            submission.transition_to(SubmissionState.SUBMITTED)
            track(submission, who, f"generation resumed: {reason}").save(update_fields=["state", "updated_at"])
            audit.record(
                action=AuditAction.GENERATION_RESUMED,
                obj=submission,
                actor=who,
                workflow_version=submission.workflow_version,
                payload={"reason": reason},
            )
            transaction.on_commit(partial(enqueue_generation, submission.pk))
    return [s.pk for s in paused]


# Only the columns a step changes are written: the submission row carries the form data, and
# a full-row UPDATE per step rewrote it every time.
_CLAIM_FIELDS = ["state", "attempts", "generation_started_at", "failure_kind", "updated_at"]
_ROUTE_FIELDS = ["state", "lane", "generation_started_at", "final_output", "released_at", "retracted_at", "updated_at"]
_FAIL_FIELDS = ["state", "failure_kind", "failure_reason", "generation_started_at", "updated_at"]


def _review_due(spec: WorkflowDefinition, lane: str):
    minutes = spec.routing.sla_minutes.get(lane)
    return timezone.now() + timedelta(minutes=minutes) if minutes else None


def _record_calls(submission: Submission, attempt: int, calls: tuple[CallRecord, ...]) -> None:
    # One row per HTTP request actually sent (retries, fallbacks, repair, cascade, QA), and
    # one for a cache hit (zero cost), so cost and reliability add up per submission.
    LLMCall.objects.bulk_create(
        LLMCall(
            submission=submission,
            attempt=attempt,
            purpose=call.purpose,
            engine=call.engine,
            model=call.model_requested,
            model_reported=call.model_reported,
            outcome=call.outcome,
            ok=call.ok,
            http_status=call.http_status,
            error=call.error[:4000],
            dropped_parameters=list(call.dropped_parameters),
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
            cached_tokens=call.cached_tokens,
            cost_usd=call.cost_usd,
            latency_ms=call.latency_ms,
        )
        for call in calls
    )


def _locked_current_attempt(submission_id: int, attempt: int) -> Submission | None:
    """The submission, locked, if ``attempt`` is still its current generation; else None."""
    submission = (
        Submission.objects.select_for_update(of=("self",))
        # The workflow comes with the row: draft_record reads its automation hold per draft.
        .select_related("workflow_version__workflow")
        .get(pk=submission_id)
    )
    if not submission.is_generating or submission.attempts != attempt:
        log.info("result for submission %s attempt %s is stale; dropped", submission_id, attempt)
        return None
    return submission


@transaction.atomic
@audit.batch()
def draft_record(
    *, submission_id: int, attempt: int, result: DraftResult, audit_draw: float | None = None
) -> Draft | None:
    """Persist a pipeline result: the draft and its calls, the route and the lane's effects.

    Decides nothing about the draft itself (``pipeline.run`` did); returns None (and changes
    nothing) when this attempt is no longer the current one. ``audit_draw`` defaults to the
    reproducible draw for (submission, attempt); callers that must not depend on ids pass it.
    """
    submission = _locked_current_attempt(submission_id, attempt)
    if submission is None:
        return None
    version = submission.workflow_version
    spec = version.spec
    system = system_user()
    draw = sample_draw_for(submission.pk, attempt) if audit_draw is None else audit_draw
    workflow = version.workflow
    hold = f"{workflow.get_automation_hold_display()}: {workflow.automation_hold_reason}" if workflow.automation_hold else ""
    decision = route(result.score, result.findings, spec.routing, draw, hold=hold, values=submission.data)
    components = {**result.components, "routing_reason": decision.reason}
    if decision.held_by:
        # The rules as written, so the review page can say why in words (workflows/explain.py).
        components["hold_rules"] = [rule.condition() for rule in decision.held_by]
    draft = Draft(
        submission=submission,
        attempt=attempt,
        engine=result.engine,
        model=result.model,
        model_requested=result.model_requested,
        content=result.content,
        parsed=result.parsed,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        latency_ms=result.latency_ms,
        cost_usd=result.cost_usd,
        cache_hit=result.cache_hit,
        score=result.score,
        score_components=components,
        findings=list(result.findings),
        lane=decision.lane,
        content_hash=audit.content_hash(result.content),
        earlier_attempts=[
            {
                "purpose": str(a.purpose),
                "model": a.model,
                "content": a.content,
                "score": a.score,
                "findings": list(a.findings),
                "finding_details": dict(a.finding_details),
            }
            for a in result.earlier_attempts
        ],
    )
    track(draft, system, "draft generated").save()
    _record_calls(submission, attempt, result.calls)
    audit.record(
        action=AuditAction.DRAFT_GENERATED,
        obj=draft,
        actor=system,
        workflow_version=version,
        payload={
            "submission_id": submission.pk,
            "attempt": attempt,
            "engine": result.engine,
            "model": result.model,
            "model_requested": result.model_requested,
            "draft_hash": draft.content_hash,
            "earlier_attempt_hashes": [audit.content_hash(a.content) for a in result.earlier_attempts],
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "cost_usd": str(result.cost_usd),
            "calls": len(result.calls),
            "cache_hit": result.cache_hit,
            "failed_models": [f"{c.model_requested}: {c.outcome}" for c in result.calls if not c.ok],
            "pii_mode": result.pii_mode,
            "pii_redacted_fields": list(result.redacted),
        },
    )
    submission.transition_to(SubmissionState.ROUTED)
    submission.lane = decision.lane
    submission.generation_started_at = None
    audit.record(
        action=AuditAction.DRAFT_ROUTED,
        obj=submission,
        actor=system,
        workflow_version=version,
        payload={
            "draft_id": draft.pk,
            "lane": decision.lane,
            "score": result.score,
            "findings": list(result.findings),
            "sampled_for_audit": decision.sampled_for_audit,
            "reason": decision.reason,
        },
    )
    _apply_lane_effects(submission, draft, decision, spec, system)
    track(submission, system, f"routed to {decision.lane}").save(update_fields=_ROUTE_FIELDS)
    return draft


def _apply_lane_effects(submission: Submission, draft: Draft, decision, spec: WorkflowDefinition, system) -> None:
    effects = effects_of(decision)
    if effects.release_now:
        release(submission, text=draft.content, actor=system, reason=f"lane {decision.lane}")
    if effects.approve_now:
        submission.transition_to(SubmissionState.APPROVED)
        audit.record(
            action=AuditAction.REVIEW_AUTO_APPROVED,
            obj=submission,
            actor=system,
            workflow_version=submission.workflow_version,
            payload={"draft_id": draft.pk, "score": draft.score},
        )
    if effects.review_lane:
        task = ReviewTask(
            submission=submission,
            draft=draft,
            lane=effects.review_lane,
            sampled=decision.sampled_for_audit,
            due_at=_review_due(spec, effects.review_lane),
            **review_task_fields(spec, effects.review_lane, submission, draft),
        )
        track(task, system, "review queued").save()


@transaction.atomic
def generation_fail(
    *, submission_id: int, attempt: int, kind: str, reason: str, calls: tuple[CallRecord, ...] = ()
) -> None:
    """End an attempt that produced no draft. ``reason`` is for staff (it may hold provider
    text); the submitter sees plain words chosen by ``kind`` (vocab.FailureKind)."""
    submission = _locked_current_attempt(submission_id, attempt)
    if submission is None:
        return
    system = system_user()
    _record_calls(submission, attempt, calls)
    submission.transition_to(SubmissionState.FAILED)
    submission.failure_kind = kind
    submission.failure_reason = reason[:4000]
    submission.generation_started_at = None
    track(submission, system, "generation failed").save(update_fields=_FAIL_FIELDS)
    audit.record(
        action=AuditAction.DRAFT_FAILED,
        obj=submission,
        actor=system,
        workflow_version=submission.workflow_version,
        # Provider error text can quote the prompt or the answer: only its hash and length.
        payload={"attempt": attempt, "kind": kind, "error_hash": audit.content_hash(submission.failure_reason),
                 "error_chars": len(submission.failure_reason), "calls": len(calls)},
    )


def may_retry(submission: Submission, user) -> bool:
    """The submitter and the workflow's reviewers may send a failed submission again;
    compliance reads only."""
    if not submission.is_failed:
        return False
    if submission.submitted_by_id == user.pk:
        return True
    reviewer_groups = set(submission.workflow.reviewer_groups.values_list("name", flat=True))
    return has_role(user, REVIEWER) and bool(reviewer_groups & group_names(user))


@transaction.atomic
def submission_retry(*, submission_id: int, actor=None, reason: str) -> Submission | None:
    """Send a failed submission back to the worker, with nothing retyped.

    ``actor`` None means the system (the automatic retry once a provider's circuit closes).
    Returns None when the submission is no longer failed (another retry won the race).
    """
    submission = Submission.objects.select_for_update(of=("self",)).select_related("workflow_version").get(
        pk=submission_id
    )
    if not submission.is_failed:
        return None
    if actor is not None and not may_retry(submission, actor):
        raise DomainError("You cannot retry this submission.")
    who = actor or system_user()
    submission.transition_to(SubmissionState.SUBMITTED)
    previous_kind = submission.failure_kind
    submission.failure_kind = ""
    track(submission, who, "retried").save()
    audit.record(
        action=AuditAction.SUBMISSION_RETRIED,
        obj=submission,
        actor=who,
        workflow_version=submission.workflow_version,
        payload={"after_attempt": submission.attempts, "failure_kind": previous_kind, "reason": reason},
    )
    transaction.on_commit(partial(enqueue_generation, submission.pk))
    return submission
