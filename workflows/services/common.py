"""Helpers shared by the services: history attribution, release and retraction."""
from __future__ import annotations

from functools import partial

from django.db import transaction
from django.utils import timezone

from .. import audit, notifications
from ..models import Submission
from ..vocab import AuditAction


def track(instance, user, reason: str):
    """Tell simple-history who made this change and why (it cannot see a request in a task)."""
    instance._history_user = user
    instance._change_reason = reason
    return instance


def release(submission: Submission, *, text: str, actor, reason: str) -> None:
    submission.final_output = text
    submission.released_at = timezone.now()
    submission.retracted_at = None
    audit.record(
        action=AuditAction.OUTPUT_RELEASED,
        obj=submission,
        actor=actor,
        workflow_version=submission.workflow_version,
        payload={"output_hash": audit.content_hash(text), "reason": reason},
    )


def retract_if_released(submission: Submission, *, actor, reason: str) -> bool:
    """Withdraw an output that is already out (an async-review or audit-sampled draft that is
    rejected or sent back). Its own event, so an export filtered on output.* shows every
    release and every withdrawal. Returns whether anything was withdrawn."""
    if not submission.is_released:
        return False
    submission.retracted_at = timezone.now()
    audit.record(
        action=AuditAction.OUTPUT_RETRACTED,
        obj=submission,
        actor=actor,
        workflow_version=submission.workflow_version,
        payload={"output_hash": audit.content_hash(submission.final_output), "reason": reason},
    )
    transaction.on_commit(partial(notifications.output_retracted, submission.pk))
    return True
