"""Decided drafts written in bulk, for the pages and monitors that read decisions (calibration,
the quality monitor): they read what was decided, not how, so the rows are made directly."""
from __future__ import annotations

import hashlib

from django.utils import timezone

from workflows.labels import Label
from workflows.models import Decision, Draft, Lane, ReviewState, ReviewTask, Submission, SubmissionState


def labelled_history(version, user, scores, labels, *, sampled=False, decided_at=None):
    """One approved submission, draft and decided review task per (score, label)."""
    now = decided_at or timezone.now()
    submissions = Submission.objects.bulk_create(
        Submission(workflow_version=version, submitted_by=user, data={}, state=SubmissionState.APPROVED) for _ in scores
    )
    drafts = Draft.objects.bulk_create(
        Draft(submission=s, attempt=1, engine="openai", model="gpt-4o-mini", content="{}", score=float(score),
              lane=Lane.AUTO_APPROVE if score >= 0.9 else Lane.ASYNC_REVIEW if score >= 0.6 else Lane.BLOCKING_REVIEW,
              content_hash=hashlib.sha256(b"{}").hexdigest())
        for s, score in zip(submissions, scores)
    )
    decision = {Label.UNCHANGED: Decision.APPROVE, Label.MINOR_EDIT: Decision.EDIT, Label.MAJOR_EDIT: Decision.EDIT,
                Label.REJECTED: Decision.REJECT}
    ReviewTask.objects.bulk_create(
        ReviewTask(submission=d.submission, draft=d, lane=Lane.ASYNC_REVIEW if sampled else d.lane, sampled=sampled,
                   state=ReviewState.DONE, decision=decision[Label(label)], label=label, decided_at=now,
                   edit_distance=None if label == Label.REJECTED else {"unchanged": 0.0, "minor_edit": 0.05}.get(label, 0.5))
        for d, label in zip(drafts, labels)
    )


def open_review_tasks(version, user, n, *, lane=Lane.BLOCKING_REVIEW, due_in_minutes=30):
    """``n`` submissions waiting in a review lane, each with its draft and one open task.

    Due times are spread a second apart so the queue's order (due time first) is known.
    """
    now = timezone.now()
    submissions = Submission.objects.bulk_create(
        Submission(workflow_version=version, submitted_by=user, data={}, state=SubmissionState.ROUTED) for _ in range(n)
    )
    drafts = Draft.objects.bulk_create(
        Draft(submission=s, attempt=1, engine="openai", model="gpt-4o-mini", content="{}", score=0.5, lane=lane,
              content_hash=hashlib.sha256(b"{}").hexdigest())
        for s in submissions
    )
    return ReviewTask.objects.bulk_create(
        ReviewTask(submission=d.submission, draft=d, lane=lane,
                   due_at=now + timezone.timedelta(minutes=due_in_minutes, seconds=i))
        for i, d in enumerate(drafts)
    )
