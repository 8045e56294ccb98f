"""Retention, erasure and legal holds.

Personal data lives in the domain rows (a submission's form data, its drafts, the reviewers'
texts, provider error text) and in their simple-history rows, never in the audit chain (whose
payloads carry ids and content hashes). So both the retention purge and an erasure request
clear those rows and their history and leave a tombstone (``Submission.erased_at`` and
``erasure_reason``; ids, states, lanes, hashes, scores, token counts and costs remain), and
the chain is never touched: it still verifies afterwards.

A legal hold (on a workflow or on one submission) keeps data from both: the purge skips held
submissions, an erasure request that covers one is refused as a whole.
"""
from __future__ import annotations

import re
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from .. import audit
from ..definitions import RETENTION_FLOOR_DAYS
from ..models import DRAFTING_STATES, DomainError, Draft, ErasureReason, LLMCall, ReviewTask, Submission, Workflow
from ..roles import system_user
from ..vocab import AuditAction
from .common import track

_ENUM_LIKE = re.compile(r"^[a-z_]{1,40}$")


def _numbers_only(value, *, top: bool = True):
    """What of a draft's score components may stay: numbers, flags, enum-like words at the top
    level (``certainty_basis: text``). Text spans quoting the answer go."""
    if isinstance(value, bool) or value is None or isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return value if top and _ENUM_LIKE.match(value) else None
    if isinstance(value, dict):
        kept = {k: _numbers_only(v, top=False) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not None}
    return None  # lists (spans, passages) are dropped whole


def _held(submission: Submission) -> bool:
    return submission.legal_hold or submission.workflow_version.workflow.legal_hold


def _scrub(submission: Submission, *, actor, reason: str) -> None:
    """Remove the personal data of one submission from its rows and their history."""
    now = timezone.now()
    submission.data = {}
    submission.regenerate_feedback = ""
    submission.final_output = ""
    submission.failure_reason = ""
    submission.erased_at = now
    submission.erasure_reason = reason
    track(submission, actor, f"erased ({reason})").save()
    Submission.history.filter(id=submission.pk).update(
        data={}, regenerate_feedback="", final_output="", failure_reason=""
    )

    drafts = list(Draft.objects.filter(submission=submission))
    for draft in drafts:
        draft.content = ""
        draft.parsed = None
        draft.earlier_attempts = [
            {"purpose": a.get("purpose"), "model": a.get("model"), "score": a.get("score"),
             "findings": a.get("findings", []), "content_hash": audit.content_hash(a.get("content"))}
            for a in draft.earlier_attempts
        ]
        draft.score_components = _numbers_only(draft.score_components)
        track(draft, actor, f"erased ({reason})").save()
        # Older history rows may hold answers the current row no longer shows.
        Draft.history.filter(id=draft.pk).update(
            content="", parsed=None, earlier_attempts=draft.earlier_attempts, score_components=draft.score_components
        )

    LLMCall.objects.filter(submission=submission).update(error="")  # append-only log, no history

    for task in ReviewTask.objects.filter(submission=submission):
        task.reason_text = ""
        task.edited_output = ""
        task.pending_output = ""  # a first approver's edit (two approvals) is the same kind of text
        task.diff = ""
        track(task, actor, f"erased ({reason})").save()
    ReviewTask.history.filter(submission_id=submission.pk).update(reason_text="", edited_output="", diff="", pending_output="")


def _erasable(queryset):
    return queryset.filter(erased_at__isnull=True).select_related("workflow_version__workflow")


@transaction.atomic
@audit.batch()
def erase_submissions_of(*, user_id: int, actor=None, request_ref: str = "") -> list[int]:
    """Erase every submission of one person (an erasure request, GDPR Art. 17).

    Refused as a whole (DomainError, nothing changed) when any of them is under a legal hold.
    One `submission.erased` event per submission and one `erasure.completed` with the ids.
    ``request_ref`` is the compliance team's reference for the request (a ticket number), not
    the person's name. Returns the erased ids (empty if there was nothing left to erase).
    """
    if not get_user_model().objects.filter(pk=user_id).exists():
        raise DomainError(f"No user with id {user_id}.")
    submissions = list(_erasable(Submission.objects.select_for_update(of=("self",)).filter(submitted_by_id=user_id)))
    held = [s.pk for s in submissions if _held(s)]
    if held:
        raise DomainError(
            f"A legal hold applies to submission(s) {', '.join(map(str, held))}: nothing was erased. "
            "Clear the hold first, or erase once it ends."
        )
    drafting = [s.pk for s in submissions if s.is_drafting]
    if drafting:
        # A draft being made from the data would be stored after the erasure.
        raise DomainError(
            f"Submission(s) {', '.join(map(str, drafting))} are being drafted: nothing was erased. "
            "Try again once drafting is over (a minute or two)."
        )
    who = actor or system_user()
    for submission in submissions:
        _scrub(submission, actor=who, reason=ErasureReason.REQUEST)
        audit.record(
            action=AuditAction.SUBMISSION_ERASED, obj=submission, actor=who,
            workflow_version=submission.workflow_version, payload={"reason": ErasureReason.REQUEST.value},
        )
    ids = [s.pk for s in submissions]
    audit.record(
        action=AuditAction.ERASURE_COMPLETED, object_type="user", object_id=user_id, actor=who,
        payload={"subject_user_id": user_id, "submission_ids": ids, "count": len(ids),
                 "request_ref_hash": audit.content_hash(request_ref) if request_ref else None},
    )
    return ids


def expired_submission_ids(*, now=None, limit: int = 500) -> list[int]:
    """Submissions past their version's `retention_days`, not erased, not on hold, finished."""
    now = now or timezone.now()
    candidates = (
        Submission.objects.filter(
            erased_at__isnull=True, legal_hold=False, workflow_version__workflow__legal_hold=False,
            created_at__lt=now - timedelta(days=RETENTION_FLOOR_DAYS),
        )
        .exclude(state__in=DRAFTING_STATES)
        .select_related("workflow_version")
        .order_by("created_at")
    )
    out = []
    for submission in candidates.iterator(chunk_size=500):
        days = submission.workflow_version.spec.retention_days
        if submission.created_at < now - timedelta(days=days):
            out.append(submission.pk)
            if len(out) >= limit:
                break
    return out


@transaction.atomic
@audit.batch()
def purge_expired(*, now=None, limit: int = 500) -> list[int]:
    """One purge run: erase up to ``limit`` submissions past retention; one `retention.purged`
    event with the count and the ids (none when there was nothing to purge)."""
    ids = expired_submission_ids(now=now, limit=limit)
    if not ids:
        return []
    system = system_user()
    submissions = list(
        _erasable(Submission.objects.select_for_update(of=("self",)).filter(pk__in=ids))
        .filter(legal_hold=False, workflow_version__workflow__legal_hold=False)
    )
    for submission in submissions:
        _scrub(submission, actor=system, reason=ErasureReason.RETENTION)
    purged = sorted(s.pk for s in submissions)
    audit.record(
        action=AuditAction.RETENTION_PURGED, object_type="retention", object_id="purge", actor=system,
        payload={"count": len(purged), "submission_ids": purged},
    )
    return purged


@transaction.atomic
def legal_hold_set(*, actor, reason_ref: str, workflow: Workflow | None = None, submission: Submission | None = None,
                   hold: bool = True):
    """Set (or with ``hold=False`` clear) a legal hold on a workflow or one submission.

    ``reason_ref`` is a matter or ticket reference; it is kept on the row and only its hash
    goes into the audit event."""
    if (workflow is None) == (submission is None):
        raise DomainError("Name a workflow or a submission, not both.")
    if hold and not reason_ref.strip():
        raise DomainError("A legal hold needs a reference (the matter or ticket).")
    target = workflow if workflow is not None else Submission.objects.select_related("workflow_version").get(
        pk=submission.pk)
    if target.legal_hold == hold:
        return target
    target.legal_hold = hold
    target.legal_hold_reason = reason_ref.strip()[:200] if hold else ""
    track(target, actor, "legal hold set" if hold else "legal hold cleared").save()
    audit.record(
        action=AuditAction.LEGAL_HOLD_SET if hold else AuditAction.LEGAL_HOLD_CLEARED,
        obj=target, actor=actor,
        workflow_version=target.workflow_version if isinstance(target, Submission) else None,
        payload={"reference_hash": audit.content_hash(reason_ref.strip()) if reason_ref.strip() else None},
    )
    return target


__all__ = ["erase_submissions_of", "expired_submission_ids", "legal_hold_set", "purge_expired"]
