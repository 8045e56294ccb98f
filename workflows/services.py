"""Every write in the domain. Each service checks state first, raises a DomainError on an
illegal move, and writes its audit event in the same transaction as the change.
"""
from __future__ import annotations

import difflib
from functools import partial
import json
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from . import audit
from .definitions import WorkflowDefinition, definition_hash, parse_yaml
from .llm import confidence
from .llm.types import Completion, ModelFailure
from .models import (
    Decision,
    DomainError,
    Draft,
    Lane,
    LLMCall,
    RejectReason,
    ReviewState,
    ReviewTask,
    Submission,
    SubmissionState,
    Workflow,
    WorkflowVersion,
)
from .roles import group_names, system_user
from .routing import route, sample_draw_for

log = logging.getLogger(__name__)


def _track(instance, user, reason: str):
    """Tell simple-history who made this change and why (it cannot see a request in a task)."""
    instance._history_user = user
    instance._change_reason = reason
    return instance


# --- workflows ---------------------------------------------------------------------------


@transaction.atomic
def workflow_publish(*, spec: WorkflowDefinition, source_yaml: str = "", actor=None) -> tuple[WorkflowVersion, bool]:
    """Publish ``spec`` as a new immutable version. Returns (version, created).

    Publishing an unchanged definition again returns the current version, so `load_workflows`
    can run on every start.
    """
    actor = actor or system_user()
    definition = spec.as_dict()
    digest = definition_hash(definition)
    workflow, _ = Workflow.objects.select_for_update().get_or_create(
        slug=spec.slug, defaults={"name": spec.name, "description": spec.description}
    )
    current = workflow.versions.order_by("-number").first()
    if current is not None and current.definition_hash == digest:
        return current, False
    workflow.name, workflow.description = spec.name, spec.description
    _track(workflow, actor, "workflow published").save()
    groups = [Group.objects.get_or_create(name=name)[0] for name in spec.reviewer_groups]
    workflow.reviewer_groups.set(groups)
    version = WorkflowVersion(
        workflow=workflow,
        number=(current.number + 1) if current else 1,
        definition=definition,
        source_yaml=source_yaml,
        definition_hash=digest,
        published_by=actor if actor.is_active else None,
    )
    _track(version, actor, "workflow published").save()
    audit.record(
        action="workflow.published",
        obj=version,
        actor=actor,
        workflow_version=version,
        payload={"slug": spec.slug, "number": version.number, "definition_hash": digest},
    )
    return version, True


def workflow_publish_yaml(*, text: str, actor=None) -> tuple[WorkflowVersion, bool]:
    return workflow_publish(spec=parse_yaml(text), source_yaml=text, actor=actor)


# --- submissions -------------------------------------------------------------------------


def submission_create(*, version: WorkflowVersion, user, data: dict[str, Any], idempotency_key: str = "") -> Submission:
    """Save a submission and enqueue its generation once the transaction commits."""
    from .tasks import enqueue_generation

    if idempotency_key:
        existing = Submission.objects.filter(submitted_by=user, idempotency_key=idempotency_key).first()
        if existing:
            return existing
    try:
        with transaction.atomic():
            submission = Submission(
                workflow_version=version, submitted_by=user, data=data, idempotency_key=idempotency_key
            )
            _track(submission, user, "submitted").save()
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
    _track(submission, system, f"generation attempt {submission.attempts}").save()
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


def _release(submission: Submission, *, text: str, actor, reason: str) -> None:
    submission.final_output = text
    submission.released_at = timezone.now()
    submission.retracted_at = None
    audit.record(
        action="output.released",
        obj=submission,
        actor=actor,
        workflow_version=submission.workflow_version,
        payload={"output_hash": audit.content_hash(text), "reason": reason},
    )


def _record_retraction(submission: Submission, *, actor, reason: str) -> None:
    """A released output was withdrawn: its own event, so an export filtered on output.*
    shows every release and every withdrawal."""
    audit.record(
        action="output.retracted",
        obj=submission,
        actor=actor,
        workflow_version=submission.workflow_version,
        payload={"output_hash": audit.content_hash(submission.final_output), "reason": reason},
    )


def _record_failed_calls(submission: Submission, attempt: int, engine: str, failures: list[ModelFailure]) -> None:
    # Each model that failed was a request of its own; cost and reliability figures per model
    # need a row for it, not a note on the successful call.
    LLMCall.objects.bulk_create(
        LLMCall(submission=submission, attempt=attempt, engine=engine, model=f.model, ok=False, error=str(f)[:4000])
        for f in failures
    )


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


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
    completion.content = completion.content.replace("\x00", "\ufffd")
    validation = confidence.validate_output(spec, completion.content)
    validation.parsed = _without_nul(validation.parsed)
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
    _track(draft, system, "draft generated").save()
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
        _release(submission, text=completion.content, actor=system, reason=f"lane {decision.lane}")
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
        _track(task, system, "review queued").save()
    _track(submission, system, f"routed to {decision.lane}").save()
    return draft


@transaction.atomic
def generation_fail(*, submission_id: int, attempt: int, reason: str, failures: list[ModelFailure] = ()) -> None:
    submission = Submission.objects.select_for_update(of=("self",)).get(pk=submission_id)
    if submission.state != SubmissionState.GENERATING or submission.attempts != attempt:
        return
    system = system_user()
    error = reason
    _record_failed_calls(submission, attempt, "openai", list(failures))
    submission.transition_to(SubmissionState.FAILED)
    submission.failure_reason = error[:4000]
    submission.generation_started_at = None
    _track(submission, system, "generation failed").save()
    audit.record(
        action="draft.failed",
        obj=submission,
        actor=system,
        workflow_version=submission.workflow_version,
        payload={"attempt": attempt, "error": error[:1000]},
    )


# --- review ------------------------------------------------------------------------------


def _check_reviewer(task: ReviewTask, user) -> None:
    if task.submission.submitted_by_id == user.pk:
        raise DomainError("You cannot review your own submission (four-eyes rule).")
    reviewer_groups = set(task.submission.workflow.reviewer_groups.values_list("name", flat=True))
    if not reviewer_groups & group_names(user):
        raise DomainError("You are not a reviewer of this workflow.")


def _locked_task(task_id: int) -> ReviewTask:
    return ReviewTask.objects.select_for_update(of=("self",)).select_related("submission__workflow_version__workflow").get(
        pk=task_id
    )


@transaction.atomic
def review_claim(*, task_id: int, user) -> ReviewTask:
    """Take (or renew) the lease on a review task."""
    task = _locked_task(task_id)
    _check_reviewer(task, user)
    if task.state != ReviewState.OPEN:
        raise DomainError("This review is already closed.")
    if task.lease_active and task.claimed_by_id != user.pk:
        raise DomainError(f"This review is claimed by {task.claimed_by} until {task.lease_expires_at:%H:%M} UTC.")
    task.claimed_by = user
    task.lease_expires_at = timezone.now() + timedelta(minutes=settings.REVIEWDESK_LEASE_MINUTES)
    _track(task, user, "claimed").save()
    audit.record(
        action="review.claimed",
        obj=task,
        actor=user,
        workflow_version=task.submission.workflow_version,
        payload={"submission_id": task.submission_id, "lease_expires_at": task.lease_expires_at.isoformat()},
    )
    return task


def _begin_decision(task_id: int, user) -> tuple[ReviewTask, Submission]:
    task = _locked_task(task_id)
    _check_reviewer(task, user)
    if task.state != ReviewState.OPEN:
        raise DomainError("This review is already closed.")
    if not task.lease_held_by(user):
        raise DomainError("Claim this review first; your lease may have expired.")
    submission = Submission.objects.select_for_update().get(pk=task.submission_id)
    return task, submission


def _close(task: ReviewTask, user, decision: str) -> None:
    task.state = ReviewState.DONE
    task.decision = decision
    task.decided_by = user
    task.decided_at = timezone.now()
    task.lease_expires_at = None


def _same_output(spec: WorkflowDefinition, original: str, candidate: str) -> bool:
    """True when the reviewer changed nothing that matters.

    For JSON outputs, re-indenting or reordering keys is not an edit: it must not label the
    draft as "edited" for calibration, nor release a new text.
    """
    if candidate == original:
        return True
    if spec.output.format != "json":
        return False
    try:
        # Compared as canonical text, not with ==, for which 1 == 1.0 == true.
        return audit.canonical_json(json.loads(candidate)) == audit.canonical_json(json.loads(original))
    except ValueError:
        return False


def _diff(spec: WorkflowDefinition, original: str, final: str) -> str:
    # JSON is diffed indented with sorted keys, so a changed value shows as one changed line
    # instead of the whole one-line document. Lines are compared without their endings: with
    # keepends, a last line lacking a newline runs into the next diff line.
    if spec.output.format == "json":
        try:
            original, final = (json.dumps(json.loads(t), indent=2, sort_keys=True, ensure_ascii=False) for t in (original, final))
        except ValueError:
            pass
    return "\n".join(difflib.unified_diff(original.splitlines(), final.splitlines(), "draft", "approved", lineterm=""))


@transaction.atomic
def review_approve(*, task_id: int, user, edited_output: str | None = None) -> ReviewTask:
    """Approve the draft, optionally with an edit (the diff is kept)."""
    task, submission = _begin_decision(task_id, user)
    original = task.draft.content
    spec = submission.workflow_version.spec
    edited = edited_output is not None and not _same_output(spec, original, edited_output.replace("\r\n", "\n"))
    final = edited_output.replace("\r\n", "\n") if edited else original
    if edited and not final.strip():
        raise DomainError("The edited output is empty; approve the draft unchanged or reject it.")
    if edited and spec.output.format == "json":
        validation = confidence.validate_output(spec, final)
        # An empty edit is reported as empty_output, not schema_invalid, but it breaks the
        # schema just the same and would release nothing.
        broken = [f for f in ("empty_output", "schema_invalid") if f in validation.findings]
        if broken:
            raise DomainError(f"The edited output does not match the schema: {validation.details[broken[0]]}")
    decision = Decision.EDIT if edited else Decision.APPROVE
    _close(task, user, decision)
    if edited:
        task.edited_output = final
        task.diff = _diff(spec, original, final)
    _track(task, user, decision).save()
    if submission.state == SubmissionState.ROUTED:
        submission.transition_to(SubmissionState.APPROVED)
    audit.record(
        action="review.edited" if edited else "review.approved",
        obj=task,
        actor=user,
        workflow_version=submission.workflow_version,
        payload={
            "submission_id": submission.pk,
            "draft_id": task.draft_id,
            "draft_hash": task.draft.content_hash,
            "final_hash": audit.content_hash(final),
            "lane": task.lane,
        },
    )
    if not submission.is_released or final != submission.final_output:
        _release(submission, text=final, actor=user, reason=decision)
    _track(submission, user, decision).save()
    return task


@transaction.atomic
def review_reject(*, task_id: int, user, reason_code: str, reason_text: str) -> ReviewTask:
    if reason_code not in RejectReason.values:
        raise DomainError("Choose a reason for the rejection.")
    if not reason_text.strip():
        raise DomainError("Explain the rejection in a sentence.")
    task, submission = _begin_decision(task_id, user)
    _close(task, user, Decision.REJECT)
    task.reason_code, task.reason_text = reason_code, reason_text.strip()
    _track(task, user, "rejected").save()
    submission.transition_to(SubmissionState.REJECTED)
    payload = {"submission_id": submission.pk, "draft_id": task.draft_id, "reason_code": reason_code, "reason_text": task.reason_text}
    if submission.is_released:
        # An async-review or sampled draft was already out; rejecting it retracts it.
        submission.retracted_at = timezone.now()
        payload["retracted"] = True
    _track(submission, user, "rejected").save()
    audit.record(action="review.rejected", obj=task, actor=user, workflow_version=submission.workflow_version, payload=payload)
    if payload.get("retracted"):
        _record_retraction(submission, actor=user, reason="rejected")
    return task


@transaction.atomic
def review_regenerate(*, task_id: int, user, feedback: str) -> ReviewTask:
    from .tasks import enqueue_generation

    if not feedback.strip():
        raise DomainError("Say what the next draft should do differently.")
    task, submission = _begin_decision(task_id, user)
    if submission.state != SubmissionState.ROUTED:
        raise DomainError("Only a draft awaiting review can be sent back for regeneration.")
    _close(task, user, Decision.REGENERATE)
    task.reason_text = feedback.strip()
    _track(task, user, "regenerate requested").save()
    submission.transition_to(SubmissionState.REGENERATING)
    submission.regenerate_feedback = feedback.strip()
    # An async-review draft was already out; sending it back withdraws it until the next one.
    retracted = submission.is_released
    if retracted:
        submission.retracted_at = timezone.now()
    _track(submission, user, "regenerate requested").save()
    audit.record(
        action="review.regenerate_requested",
        obj=task,
        actor=user,
        workflow_version=submission.workflow_version,
        payload={
            "submission_id": submission.pk,
            "draft_id": task.draft_id,
            "feedback": feedback.strip(),
            "retracted": retracted,
        },
    )
    if retracted:
        _record_retraction(submission, actor=user, reason="sent back for regeneration")
    transaction.on_commit(partial(enqueue_generation, submission.pk))
    return task
