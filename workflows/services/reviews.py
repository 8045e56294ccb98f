"""Reviewer decisions: claim (a lease), approve (with or without an edit), reject, regenerate."""
from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from .. import audit, labels, notifications, selectors
from ..db_prepared import prepared_cursor
from ..definitions import WorkflowDefinition
from ..dispatch import enqueue_generation
from ..models import (
    Decision,
    DomainError,
    Lane,
    RejectReason,
    ReviewApproval,
    ReviewState,
    ReviewTask,
    Submission,
    SubmissionState,
    Workflow,
)
from ..review_editor import output_problems
from ..roles import REVIEWER, group_names, has_role
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
    if task.approvals_given and task.approvals.filter(reviewer=user, superseded=False).exists():
        raise DomainError("You approved this text already; a second reviewer decides it now.")
    task.claimed_by = user
    task.lease_expires_at = timezone.now() + timedelta(minutes=settings.REVIEWDESK_LEASE_MINUTES)
    _claim_commits_without_waiting()
    track(task, user, "claimed").save()
    _record_claim(task, user)
    return task


def _claim_commits_without_waiting() -> None:
    """A claim is a lease, not a decision: its commit need not wait for the WAL flush (2-6 ms on
    a busy disk, the largest part of a claim by Next). A crash in the next ~0.6 s may lose the
    claim and its audit event together (never one without the other); the item is then free
    again, and a decision on it is refused for want of a lease. A decision's own commit stays
    synchronous and flushes every earlier claim with it. REVIEWDESK_CLAIM_ASYNC_COMMIT=false
    turns this off. Only in a transaction of the claim's own: SET LOCAL lasts until the
    outermost transaction ends, and a caller's transaction may hold a decision."""
    own = len(connection.atomic_blocks) == 1  # the caller's @transaction.atomic only
    if settings.REVIEWDESK_CLAIM_ASYNC_COMMIT and connection.vendor == "postgresql" and own:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _record_claim(task: ReviewTask, user, **extra) -> None:
    """The audit event of a claim, by hand or by Next (``next=True``)."""
    audit.record(
        action=AuditAction.REVIEW_CLAIMED,
        obj=task,
        actor=user,
        workflow_version=task.submission.workflow_version,
        payload={"submission_id": task.submission_id, "lease_expires_at": task.lease_expires_at.isoformat(), **extra},
    )


def review_claim_next(*, user, lane: str | None = None) -> int | None:
    """Claim the most urgent open review this user may work; its id, or None when nothing is free.

    ``SKIP LOCKED`` makes concurrent reviewers pass over a row another one is claiming this
    instant instead of waiting for it and then finding it taken, so fifty reviewers pressing
    "Next" at once get fifty different items in one try each. The lease condition is in the same
    locked SELECT, so an item held by someone else is never offered, nor one this reviewer
    already gave its first of two approvals.

    On PostgreSQL the claim is ONE statement (_claim_sql): pick, lease, history row and audit
    event in a data-modifying CTE, built once per process. Next is pressed by every reviewer all
    day; built through the ORM it was eight round trips and ~8 ms of Python per claim (compiling
    the pick alone 2.4 ms, reading the task back 1.7 ms), and fifty at once queued on the CPU.
    The pick repeats selectors.queue_scope's rule and QUEUE_ORDER in SQL;
    tests/integration/test_review_next.py checks on a mixed queue that Next takes exactly the
    page's first free row, tab by tab, so the two cannot drift apart unnoticed. SQLite (the demo
    default) has no row locks; there the single writer serialises claims through the ORM.
    """
    tab = selectors.QUEUE_TABS.get(lane or "")
    if connection.vendor != "postgresql":
        return _claim_next_orm(user, tab)
    if not has_role(user, REVIEWER):
        return None
    now = timezone.now()
    expires = now + timedelta(minutes=settings.REVIEWDESK_LEASE_MINUTES)
    sql = _claim_sql(with_tab=tab is not None)
    audit_params = audit.insert_select_params(action=AuditAction.REVIEW_CLAIMED, actor=user,
                                              object_type=ReviewTask._meta.model_name, created_at=now)
    # Outside a caller's transaction (the Next view) the statement is its own transaction: one
    # round trip, no BEGIN/SET/COMMIT, and its commit skips the WAL flush (_claim_sql's
    # set_config(..., true) lasts for that transaction only; see _claim_commits_without_waiting
    # for why a claim may). Inside a caller's transaction (a test, a service composing it) it
    # joins that one and leaves the caller's commit alone.
    own_transaction = not connection.in_atomic_block
    params = {"user": user.pk, "now": now, "expires": expires, "expires_iso": expires.isoformat(),
              "sync_commit": "off" if own_transaction and settings.REVIEWDESK_CLAIM_ASYNC_COMMIT else None,
              **(dict(tab[1].children) if tab else {}), **audit_params}
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is not None:
        audit.appended()
    return row[0] if row else None


@functools.cache
def _claim_sql(*, with_tab: bool) -> str:
    """The claim statement, built once per process per shape (with or without a tab).

    It starts with WITH, not SELECT: db_resilience re-runs a statement that starts with SELECT
    on a fresh connection when the connection dies under it, and a claim whose answer was lost
    may have committed.

    It is prepared and run from a generic plan (db_prepared.prepared_cursor), planned once
    without the parameters' values, so two things are spelled for that plan: the open state is
    a literal, or the plan could not use the partial indexes on open tasks (their condition is
    state = 'open'); and "not the reviewer's own submission" compares ``submitted_by_id + 0``,
    an expression the planner estimates at its default (almost every row passes), because on
    the column itself, where most submissions come from one submitter (an integration account,
    a seeded queue), the generic estimate is "almost no row passes" and the plan became a 64 ms
    sort of every open task instead of the 1 ms walk of the queue's index."""
    event_sql = audit.insert_select_sql(
        object_id_sql="claimed.id", workflow_version_sql="s.workflow_version_id",
        payload_sql="jsonb_build_object('submission_id', claimed.submission_id, "
                    "'lease_expires_at', %(expires_iso)s::text, 'next', true)",
        from_sql="claimed JOIN workflows_submission s ON s.id = claimed.submission_id")
    task = ReviewTask._meta.db_table
    reviewer_groups = Workflow.reviewer_groups.through._meta.db_table
    user_groups = get_user_model().groups.through._meta.db_table
    history = ReviewTask.history.model._meta
    # The history row the save() of a claim would write (simple-history's columns: every
    # field of the task, then who, when, why and "~" for a change).
    copied = [f.column for f in history.concrete_fields if not f.name.startswith("history_")]
    return f"""
WITH pick AS (
    SELECT t.id FROM {task} t
    JOIN workflows_submission s ON s.id = t.submission_id
    JOIN workflows_workflowversion v ON v.id = s.workflow_version_id
    WHERE t.state = '{ReviewState.OPEN}' {"AND t.lane = %(lane)s AND t.sampled = %(sampled)s" if with_tab else ""}
      AND (v.workflow_id IN (SELECT rg.workflow_id FROM {reviewer_groups} rg
                             JOIN {user_groups} ug ON ug.group_id = rg.group_id WHERE ug.user_id = %(user)s)
           OR (t.escalated_at IS NOT NULL
               AND t.escalated_to_id IN (SELECT group_id FROM {user_groups} WHERE user_id = %(user)s)))
      AND s.submitted_by_id + 0 <> %(user)s
      AND (t.lease_expires_at IS NULL OR t.lease_expires_at <= %(now)s)
      AND NOT EXISTS (SELECT 1 FROM {ReviewApproval._meta.db_table} a
                      WHERE a.task_id = t.id AND a.reviewer_id = %(user)s AND NOT a.superseded)
    ORDER BY t.due_at ASC NULLS LAST, t.priority DESC, t.id ASC
    LIMIT 1
    FOR UPDATE OF t SKIP LOCKED
), claimed AS (
    UPDATE {task} t SET claimed_by_id = %(user)s, lease_expires_at = %(expires)s
    FROM pick WHERE t.id = pick.id
    RETURNING t.*
), history AS (
    INSERT INTO {history.db_table} ({", ".join(copied)}, history_date, history_change_reason, history_type,
                                    history_user_id)
    SELECT {", ".join("claimed." + c for c in copied)}, %(now)s, 'claimed', '~', %(user)s FROM claimed
), event AS (
    {event_sql}
)
SELECT claimed.id,
       set_config('synchronous_commit', COALESCE(%(sync_commit)s, current_setting('synchronous_commit')), true)
FROM claimed"""


def _claim_next_orm(user, tab) -> int | None:
    """review_claim_next on SQLite: the same pick through the ORM, one writer at a time."""
    with transaction.atomic():
        now = timezone.now()
        expires = now + timedelta(minutes=settings.REVIEWDESK_LEASE_MINUTES)
        task_id = (
            selectors.queue_scope(user)
            .filter(tab[1] if tab else Q())
            .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now))
            .exclude(Exists(ReviewApproval.objects.filter(task=OuterRef("pk"), reviewer=user, superseded=False)))
            .order_by(*selectors.QUEUE_ORDER)
            .values_list("pk", flat=True)
            .first()
        )
        if task_id is None:
            return None
        ReviewTask.objects.filter(pk=task_id).update(claimed_by=user, lease_expires_at=expires)
        task = ReviewTask.objects.select_related("submission__workflow_version").get(pk=task_id)
        ReviewTask.history.bulk_history_create([task], update=True, default_user=user, default_change_reason="claimed")
        _record_claim(task, user, next=True)
        return task_id


def review_lease_renew(*, task_id: int, user):
    """Keep the lease of a review its holder is working on (the review page's heartbeat).

    One conditional UPDATE: it extends only a lease this user still holds, so a heartbeat that
    arrives after the lease ran out (and someone else claimed the item) changes nothing. No
    history row or audit event: the claim is recorded; a renewal every minute would bury it.
    Returns the new expiry; DomainError (a sentence for the reviewer) when the lease is gone.
    """
    now = timezone.now()
    expires = now + timedelta(minutes=settings.REVIEWDESK_LEASE_RENEW_MINUTES)
    with transaction.atomic():
        held = ReviewTask.objects.open().filter(pk=task_id, claimed_by=user, lease_expires_at__gt=now)
        # Never shortens a lease: the claim's own (longer) lease stands until it is nearer.
        held.filter(lease_expires_at__lt=expires).update(lease_expires_at=expires)
        current = held.values_list("lease_expires_at", flat=True).first()
    if current is not None:
        return current
    task = ReviewTask.objects.select_related("claimed_by").get(pk=task_id)
    if not task.is_open:
        raise DomainError("This review is already closed.")
    if task.lease_active:
        raise LeaseLost(f"{task.claimed_by} holds this review now, until {task.lease_expires_at:%H:%M} UTC.",
                        held_by_other=True)
    raise LeaseLost("Your lease on this review has expired; claim it again to decide.", held_by_other=False)


class LeaseLost(DomainError):
    """A heartbeat for a lease that is gone: ``held_by_other`` says whether someone took it."""

    def __init__(self, message: str, *, held_by_other: bool):
        super().__init__(message)
        self.held_by_other = held_by_other


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
    if task.approvals_required > 1:
        final = _approval_or_hold(task, spec, user, final)
        if final is None:  # the first of two approvals: recorded, the task stays open
            return task
        edited = final != original
    _approve(task, submission, user, spec=spec, original=original, final=final, edited=edited)
    return task


def _approve(task: ReviewTask, submission: Submission, user, *, spec: WorkflowDefinition, original: str,
             final: str, edited: bool, change_reason: str = "", **payload) -> None:
    """Close an approval (one by one or in bulk): label, history, the submission's state, the
    audit event, the release when the text is new, the submitter's e-mail after commit. The
    caller holds both rows' locks and has checked the text."""
    decision = Decision.EDIT if edited else Decision.APPROVE
    distance = labels.edit_distance(original, final, json_output=spec.output.format == "json") if edited else 0.0
    _close(task, user, decision, distance)
    if edited:
        task.edited_output = final
        task.diff = _diff(spec, original, final)
    track(task, user, change_reason or decision).save()
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
            **payload,
        },
    )
    if not submission.is_released or final != submission.final_output:
        release(submission, text=final, actor=user, reason=decision)
    track(submission, user, change_reason or decision).save()
    transaction.on_commit(partial(notifications.decision_made, task.pk))


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


# --- two approvals (routing.two_approvals) ---------------------------------------------------


def _approval_or_hold(task: ReviewTask, spec: WorkflowDefinition, user, final: str) -> str | None:
    """Count this approval of ``final`` on a review that needs two distinct reviewers.

    Returns the text to release when this approval completes the count, or None after
    recording a first approval (audit event ``review.approval_recorded``; the lease is given
    back so a second reviewer can take the item). The approvals count for one text: a reviewer
    who approves a different text (an edit of what the first approved, or the draft back
    unchanged) supersedes the earlier approvals, and theirs is the first approval of the new
    text, which then needs another reviewer (the earlier approver may be that one). Nobody
    approves the same text twice. The caller holds the task's row lock.
    """
    current = list(ReviewApproval.objects.filter(task=task, superseded=False).order_by("id"))
    approved_text = task.pending_output or task.draft.content
    superseded = bool(current) and not _same_output(spec, approved_text, final)
    if superseded:
        ReviewApproval.objects.filter(task=task, superseded=False).update(superseded=True)
        current = []
    elif current:
        final = approved_text  # re-indented JSON is the same text: release exactly what was approved
    if any(a.reviewer_id == user.pk for a in current):
        raise DomainError("You have already approved this text; it needs a second reviewer's approval.")
    final_hash = audit.content_hash(final)
    ReviewApproval.objects.create(task=task, reviewer=user, output_hash=final_hash)
    task.approvals_given = len(current) + 1
    if task.approvals_given >= task.approvals_required:
        return final
    task.pending_output = "" if final == task.draft.content else final
    task.claimed_by = None
    task.lease_expires_at = None
    track(task, user, "approval recorded").save()
    audit.record(
        action=AuditAction.REVIEW_APPROVAL_RECORDED,
        obj=task,
        actor=user,
        workflow_version=task.submission.workflow_version,
        payload={
            "submission_id": task.submission_id,
            "draft_id": task.draft_id,
            "final_hash": final_hash,
            "approvals": task.approvals_given,
            "approvals_required": task.approvals_required,
            "superseded_earlier_approvals": superseded,
        },
    )
    return None


# --- bulk confirm (async lane) ---------------------------------------------------------------

BULK_CONFIRM_CAP = 50


@dataclass
class BulkConfirmResult:
    confirmed: list[int] = field(default_factory=list)  # submission ids
    skipped: list[tuple[str, str]] = field(default_factory=list)  # ("#submission", reason)


def bulk_confirm_candidates(*, user, task_ids) -> list[ReviewTask]:
    """The selected tasks that bulk confirm would approve now (the confirmation step lists them)."""
    ids = _bulk_ids(task_ids)
    return list(selectors.queue_scope(user).filter(pk__in=ids, lane=Lane.ASYNC_REVIEW, sampled=False, finding_codes="",
                                                   approvals_required=1)
                .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=timezone.now()) | Q(claimed_by=user))
                .select_related("submission").only("id", "submission_id", "submission__id").order_by("id"))


def _bulk_ids(task_ids) -> list[int]:
    ids = list(dict.fromkeys(int(pk) for pk in task_ids))
    if not ids:
        raise DomainError("Select at least one item to confirm.")
    if len(ids) > BULK_CONFIRM_CAP:
        raise DomainError(f"Confirm at most {BULK_CONFIRM_CAP} items at once; you selected {len(ids)}.")
    return ids


@transaction.atomic
@audit.batch()
def review_bulk_confirm(*, user, task_ids) -> BulkConfirmResult:
    """Confirm released async drafts as reviewed, unchanged: one approval and one audit event
    per item, in one transaction (the audit chain lock is taken once, at the end).

    Only what a reviewer could approve unchanged one by one, without reading anything the
    list hides: async-lane items without findings, not held by another reviewer, still open,
    not in the audit sample (drawn to be looked at) and not needing two approvals. Everything
    else is skipped and named in the result with the reason; a row another reviewer is
    deciding this instant is skipped (SKIP LOCKED), never waited for.
    """
    ids = _bulk_ids(task_ids)
    result = BulkConfirmResult()
    known = dict(selectors.review_tasks_for(user).filter(pk__in=ids).values_list("pk", "submission_id"))
    reviewable = set(selectors.queue_scope(user).filter(pk__in=ids).values_list("pk", flat=True))
    now = timezone.now()
    for pk in ids:
        label = f"#{known[pk]}" if pk in known else f"item {pk}"
        if pk not in reviewable:
            result.skipped.append((label, "already decided or not in your queue"))
            continue
        task = (ReviewTask.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("submission__workflow_version", "draft", "claimed_by").filter(pk=pk).first())
        reason = _bulk_refusal(task, user, now)
        if reason:
            result.skipped.append((label, reason))
            continue
        submission = Submission.objects.select_for_update().get(pk=task.submission_id)
        task.claimed_by = user
        draft_text = task.draft.content
        _approve(task, submission, user, spec=submission.workflow_version.spec, original=draft_text,
                 final=draft_text, edited=False, change_reason="approved (bulk confirm)", bulk=True)
        result.confirmed.append(submission.pk)
    return result


def _bulk_refusal(task: ReviewTask | None, user, now) -> str | None:
    if task is None:
        return "another reviewer is deciding it right now"
    if not task.is_open:
        return "already decided"
    if task.lease_expires_at and task.lease_expires_at > now and task.claimed_by_id != user.pk:
        return f"held by {task.claimed_by} until {task.lease_expires_at:%H:%M} UTC"
    if task.lane != Lane.ASYNC_REVIEW:
        return "not in the async lane"
    if task.sampled:
        return "an audit sample: review it on its own"
    if task.finding_codes or task.draft.findings:
        return "has findings: review it on its own"
    if task.approvals_required > 1:
        return "needs two approvals"
    try:
        _check_reviewer(task, user)
    except DomainError as exc:
        return str(exc)
    return None
