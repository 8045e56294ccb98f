"""Reviewer decisions: claim (a lease), approve (with or without an edit), reject, regenerate."""
from __future__ import annotations

import difflib
import json
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .. import audit, labels, notifications
from ..definitions import WorkflowDefinition
from ..dispatch import enqueue_generation
from ..models import Decision, DomainError, RejectReason, ReviewState, ReviewTask, Submission, SubmissionState
from ..review_editor import output_problems
from ..roles import group_names
from ..selectors import open_review_tasks_for
from ..vocab import AuditAction
from .common import release, retract_if_released, track


def _check_reviewer(task: ReviewTask, user) -> None:
    if task.submission.submitted_by_id == user.pk:
        raise DomainError("You cannot review your own submission (four-eyes rule).")
    reviewer_groups = set(task.submission.workflow.reviewer_groups.values_list("name", flat=True))
    # An escalated task is also its escalation group's (issue 8; selectors.review_tasks_for).
    if task.escalated_at is not None and task.escalated_to_id is not None:
        reviewer_groups.add(task.escalated_to.name)
    if not reviewer_groups & group_names(user):
        raise DomainError("You are not a reviewer of this workflow.")


def review_refusal(task: ReviewTask, user) -> str | None:
    """May ``user`` decide ``task`` now? None if so, else the reason in words a reviewer reads.

    The one rule: views ask it before offering or accepting a decision, and every decision
    service asks it again under the row lock.
    """
    if not task.is_open:
        return "This review is already closed."
    if not task.lease_held_by(user):
        return "Claim this review first; your lease may have expired."
    return None


def _open_task(task_id: int, user) -> ReviewTask:
    """Lock an open review task this user may work on, or refuse."""
    task = ReviewTask.objects.select_for_update(of=("self",)).select_related("submission__workflow_version__workflow").get(
        pk=task_id
    )
    _check_reviewer(task, user)
    if not task.is_open:
        raise DomainError("This review is already closed.")
    return task


@transaction.atomic
def review_claim(*, task_id: int, user) -> ReviewTask:
    """Take (or renew) the lease on a review task."""
    task = _open_task(task_id, user)
    if task.lease_active and task.claimed_by_id != user.pk:
        raise DomainError(f"This review is claimed by {task.claimed_by} until {task.lease_expires_at:%H:%M} UTC.")
    task.claimed_by = user
    task.lease_expires_at = timezone.now() + timedelta(minutes=settings.REVIEWDESK_LEASE_MINUTES)
    track(task, user, "claimed").save()
    audit.record(
        action=AuditAction.REVIEW_CLAIMED,
        obj=task,
        actor=user,
        workflow_version=task.submission.workflow_version,
        payload={"submission_id": task.submission_id, "lease_expires_at": task.lease_expires_at.isoformat()},
    )
    return task


def review_claim_next(*, user, lane: str | None = None) -> ReviewTask | None:
    """Claim the most urgent open review this user may work, or None when nothing is free.

    ``SKIP LOCKED`` makes concurrent reviewers pass over a row another one is claiming this
    instant instead of waiting for it and then finding it taken, so fifty reviewers pressing
    "Next" at once get fifty different items (and nobody queues behind a lock held for a
    request). The lease condition is in the same locked SELECT, so an item held by someone
    else is never offered. SQLite (the demo default) has no row locks; there the single
    writer serialises claims.
    """
    with transaction.atomic():
        now = timezone.now()
        task = (
            open_review_tasks_for(user, lane)
            .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now))
            .select_for_update(skip_locked=True, of=("self",))
            .first()
        )
        if task is None:
            return None
        task.claimed_by = user
        task.lease_expires_at = now + timedelta(minutes=settings.REVIEWDESK_LEASE_MINUTES)
        track(task, user, "claimed").save()
        audit.record(
            action=AuditAction.REVIEW_CLAIMED,
            obj=task,
            actor=user,
            workflow_version=task.submission.workflow_version,
            payload={"submission_id": task.submission_id, "lease_expires_at": task.lease_expires_at.isoformat(), "next": True},
        )
        return task


@transaction.atomic
def review_release(*, task_id: int, user) -> ReviewTask:
    """Give a claimed review back to the queue before the lease runs out."""
    task = _open_task(task_id, user)
    if not task.lease_held_by(user):
        raise DomainError("You do not hold this review.")
    task.claimed_by = None
    task.lease_expires_at = None
    track(task, user, "released to the queue").save()
    audit.record(
        action=AuditAction.REVIEW_UNCLAIMED,
        obj=task,
        actor=user,
        workflow_version=task.submission.workflow_version,
        payload={"submission_id": task.submission_id},
    )
    return task


def _begin_decision(task_id: int, user) -> tuple[ReviewTask, Submission]:
    task = _open_task(task_id, user)
    if refusal := review_refusal(task, user):
        raise DomainError(refusal)
    submission = Submission.objects.select_for_update().get(pk=task.submission_id)
    return task, submission


def _close(task: ReviewTask, user, decision: str, distance: float | None = None) -> None:
    task.transition_to(ReviewState.DONE)
    task.decision = decision
    task.edit_distance = distance
    task.label = labels.label_for(decision, distance)
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
    except (ValueError, RecursionError):
        return False


def _diff(spec: WorkflowDefinition, original: str, final: str) -> str:
    # JSON is diffed indented with sorted keys, so a changed value shows as one changed line
    # instead of the whole one-line document. Lines are compared without their endings: with
    # keepends, a last line lacking a newline runs into the next diff line.
    if spec.output.format == "json":
        try:
            original, final = (json.dumps(json.loads(t), indent=2, sort_keys=True, ensure_ascii=False) for t in (original, final))
        except (ValueError, RecursionError):
            pass
    return "\n".join(difflib.unified_diff(original.splitlines(), final.splitlines(), "draft", "approved", lineterm=""))


def check_final_output(spec: WorkflowDefinition, final: str, *, edited: bool) -> None:
    """Refuse to approve a text that is not a valid output of the workflow, edited or not.

    The pipeline routes a schema-invalid draft to a person, so an unchanged draft can be just as
    invalid as a bad edit: approving it would release a document the workflow promised would not
    exist. The message names the field (review_editor.output_problems).
    """
    if problems := output_problems(spec, final):
        what = "edited output" if edited else "draft"
        listed = "; ".join(p.text for p in problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        raise DomainError(f"The {what} does not match the schema: {listed}. "
                          + ("Correct it and approve again." if edited else "Edit it before approving, or reject it."))


@transaction.atomic
@audit.batch()
def review_approve(*, task_id: int, user, edited_output: str | None = None) -> ReviewTask:
    """Approve the draft, optionally with an edit (the diff is kept)."""
    task, submission = _begin_decision(task_id, user)
    original = task.draft.content
    spec = submission.workflow_version.spec
    candidate = edited_output.replace("\r\n", "\n") if edited_output is not None else original
    edited = not _same_output(spec, original, candidate)
    final = candidate if edited else original
    if edited and not final.strip():
        raise DomainError("The edited output is empty; approve the draft unchanged or reject it.")
    check_final_output(spec, final, edited=edited)
    decision = Decision.EDIT if edited else Decision.APPROVE
    distance = labels.edit_distance(original, final, json_output=spec.output.format == "json") if edited else 0.0
    _close(task, user, decision, distance)
    if edited:
        task.edited_output = final
        task.diff = _diff(spec, original, final)
    track(task, user, decision).save()
    if submission.is_awaiting_review:
        submission.transition_to(SubmissionState.APPROVED)
    audit.record(
        action=AuditAction.REVIEW_EDITED if edited else AuditAction.REVIEW_APPROVED,
        obj=task,
        actor=user,
        workflow_version=submission.workflow_version,
        payload={
            "submission_id": submission.pk,
            "draft_id": task.draft_id,
            "draft_hash": task.draft.content_hash,
            "final_hash": audit.content_hash(final),
            "lane": task.lane,
            "label": task.label,
            "edit_distance": task.edit_distance,
        },
    )
    if not submission.is_released or final != submission.final_output:
        release(submission, text=final, actor=user, reason=decision)
    track(submission, user, decision).save()
    transaction.on_commit(partial(notifications.decision_made, task.pk))
    return task


@transaction.atomic
@audit.batch()
def review_reject(*, task_id: int, user, reason_code: str, reason_text: str) -> ReviewTask:
    if reason_code not in RejectReason.values:
        raise DomainError("Choose a reason for the rejection.")
    if not reason_text.strip():
        raise DomainError("Explain the rejection in a sentence.")
    task, submission = _begin_decision(task_id, user)
    _close(task, user, Decision.REJECT)
    task.reason_code, task.reason_text = reason_code, reason_text.strip()
    track(task, user, "rejected").save()
    submission.transition_to(SubmissionState.REJECTED)
    # The reason text may name people: the chain keeps its hash and length, the task row the text.
    payload = {"submission_id": submission.pk, "draft_id": task.draft_id, "reason_code": reason_code, "label": task.label,
               "reason_text_hash": audit.content_hash(task.reason_text), "reason_text_chars": len(task.reason_text)}
    if submission.is_released:
        payload["retracted"] = True
    audit.record(action=AuditAction.REVIEW_REJECTED, obj=task, actor=user, workflow_version=submission.workflow_version, payload=payload)
    retract_if_released(submission, actor=user, reason="rejected")
    track(submission, user, "rejected").save()
    transaction.on_commit(partial(notifications.decision_made, task.pk))
    return task


@transaction.atomic
@audit.batch()
def review_regenerate(*, task_id: int, user, feedback: str) -> ReviewTask:
    feedback = feedback.strip()
    if not feedback:
        raise DomainError("Say what the next draft should do differently.")
    task, submission = _begin_decision(task_id, user)
    if not submission.is_awaiting_review:
        raise DomainError("Only a draft awaiting review can be sent back for regeneration.")
    _close(task, user, Decision.REGENERATE)
    task.reason_text = feedback
    track(task, user, "regenerate requested").save()
    submission.transition_to(SubmissionState.REGENERATING)
    submission.regenerate_feedback = feedback
    audit.record(
        action=AuditAction.REVIEW_REGENERATE_REQUESTED,
        obj=task,
        actor=user,
        workflow_version=submission.workflow_version,
        payload={
            "submission_id": submission.pk,
            "draft_id": task.draft_id,
            # Reviewer feedback may name people: its hash and length, never the text.
            "feedback_hash": audit.content_hash(feedback),
            "feedback_chars": len(feedback),
            "retracted": submission.is_released,
            "label": task.label,
        },
    )
    # A released async draft is withdrawn until the next one is reviewed.
    retract_if_released(submission, actor=user, reason="sent back for regeneration")
    track(submission, user, "regenerate requested").save()
    transaction.on_commit(partial(enqueue_generation, submission.pk))
    return task
