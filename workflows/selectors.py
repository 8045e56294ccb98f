"""Every read, scoped to the user asking. Objects outside the scope simply do not exist (404)."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum
from django.shortcuts import get_object_or_404
from django.utils import timezone

from .models import AuditEvent, Lane, LLMCall, ReviewTask, Submission, Workflow
from .roles import COMPLIANCE, REVIEWER, SUBMITTER, WORKFLOW_ADMIN, has_role


def _reviewable_workflows_q(user) -> Q:
    return Q(reviewer_groups__in=user.groups.all())


def workflows_for_submitter(user) -> QuerySet[Workflow]:
    if not has_role(user, SUBMITTER):
        return Workflow.objects.none()
    return Workflow.objects.filter(versions__isnull=False).distinct().order_by("name")


def workflow_for_submitter(user, slug: str) -> Workflow:
    return get_object_or_404(workflows_for_submitter(user), slug=slug)


def workflows_for_admin(user) -> QuerySet[Workflow]:
    """Every workflow with its versions, for the people who define them."""
    if not has_role(user, WORKFLOW_ADMIN):
        return Workflow.objects.none()
    return Workflow.objects.prefetch_related("versions", "reviewer_groups").order_by("name")


def submissions_for(user) -> QuerySet[Submission]:
    """Compliance sees all; a reviewer sees their workflows' submissions; anyone sees their own.

    Workflow admins define workflows; they do not read submissions by virtue of that role.
    """
    qs = Submission.objects.select_related("workflow_version__workflow", "submitted_by")
    if has_role(user, COMPLIANCE):
        return qs
    scope = Q(submitted_by=user)
    if has_role(user, REVIEWER):
        reviewable = Workflow.objects.filter(_reviewable_workflows_q(user)).values("pk")
        scope |= Q(workflow_version__workflow__in=reviewable)
    return qs.filter(scope)


def own_submissions(user) -> QuerySet[Submission]:
    return Submission.objects.select_related("workflow_version__workflow", "submitted_by").filter(submitted_by=user)


def submission_for(user, pk: int) -> Submission:
    return get_object_or_404(submissions_for(user), pk=pk)


def review_tasks_for(user) -> QuerySet[ReviewTask]:
    """Open review tasks this user may work: their groups' workflows, never their own submissions."""
    if not has_role(user, REVIEWER):
        return ReviewTask.objects.none()
    reviewable = Workflow.objects.filter(_reviewable_workflows_q(user)).values("pk")
    return (
        ReviewTask.objects.select_related("submission__workflow_version__workflow", "submission__submitted_by", "draft", "claimed_by")
        .filter(submission__workflow_version__workflow__in=reviewable)
        .exclude(submission__submitted_by=user)
    )


def open_review_tasks_for(user, lane: str | None = None) -> QuerySet[ReviewTask]:
    qs = review_tasks_for(user).open()
    if lane:
        qs = qs.filter(lane=lane)
    return qs.order_by("due_at", "created_at")


def review_task_for(user, pk: int) -> ReviewTask:
    return get_object_or_404(review_tasks_for(user), pk=pk)


def queue_counts(user) -> dict[str, int]:
    rows = review_tasks_for(user).open().values("lane").annotate(n=Count("id"))
    counts = {lane: 0 for lane in (Lane.BLOCKING_REVIEW, Lane.ASYNC_REVIEW)}
    counts.update({row["lane"]: row["n"] for row in rows})
    return counts


def submission_still_open(submission: Submission) -> bool:
    """Can anything still change what the submitter sees? (An auto-approved draft drawn for
    the audit sample is approved, but its reviewer may still retract it.)"""
    return not submission.is_terminal or submission.review_tasks.open().exists()


def decisions_for_submission(submission: Submission) -> QuerySet[ReviewTask]:
    """The closed reviews of one submission, oldest first (the caller has scoped it)."""
    return submission.review_tasks.decided().select_related("decided_by").order_by("decided_at")


def audit_events_for_submission(user, submission: Submission) -> QuerySet[AuditEvent]:
    """The audit trail of one submission (the caller has already scoped the submission)."""
    task_ids = [str(pk) for pk in submission.review_tasks.values_list("pk", flat=True)]
    draft_ids = [str(pk) for pk in submission.drafts.values_list("pk", flat=True)]
    return AuditEvent.objects.filter(
        Q(object_type="submission", object_id=str(submission.pk))
        | Q(object_type="reviewtask", object_id__in=task_ids)
        | Q(object_type="draft", object_id__in=draft_ids)
    ).order_by("id")


def audit_events_for(user) -> QuerySet[AuditEvent]:
    if not has_role(user, COMPLIANCE):
        return AuditEvent.objects.none()
    return AuditEvent.objects.select_related("workflow_version__workflow").order_by("-id")


def stalled_generation_ids(*, limit: int = 500) -> list[int]:
    """Submissions whose generation task was lost: never picked up after the grace period,
    or claimed by a worker that has not finished within the stale limit. System-wide: only
    the periodic sweep calls this."""
    now = timezone.now()
    waiting_since = now - timedelta(seconds=settings.REVIEWDESK_ENQUEUE_GRACE_SECONDS)
    stale_before = now - timedelta(seconds=settings.REVIEWDESK_GENERATION_STALE_SECONDS)
    stalled = Submission.objects.stalled(waiting_since=waiting_since, stale_before=stale_before)
    return list(stalled.order_by("updated_at").values_list("pk", flat=True)[:limit])


def failed_generations_to_retry(*, limit: int = 200) -> list[int]:
    """Failed for want of a provider, failed long enough ago, and with a model whose circuit
    is closed (or half-open: the retry is the trial call). System-wide: for the periodic task."""
    from .pipeline.engines import model_available

    failed_before = timezone.now() - timedelta(seconds=settings.REVIEWDESK_AUTO_RETRY_SECONDS)
    candidates = (
        Submission.objects.failed_retryable()
        .filter(updated_at__lt=failed_before)
        .select_related("workflow_version")
        .order_by("updated_at")[:limit]
    )
    from .pipeline.run import model_chain

    return [s.pk for s in candidates if any(model_available(m) for m in model_chain(s.workflow_version.spec))]


def calls_for_draft(draft) -> QuerySet[LLMCall]:
    """Every model request of the attempt that made this draft (the caller scoped the draft)."""
    if draft is None:
        return LLMCall.objects.none()
    return LLMCall.objects.filter(submission_id=draft.submission_id, attempt=draft.attempt).order_by("id")


def submission_cost(submission: Submission) -> dict:
    """Every model call of one submission, all attempts (draft, retries, repair, QA, cascade,
    failures): requests, tokens and cost. The caller has scoped the submission."""
    totals = submission.llm_calls.aggregate(
        requests=Count("id"), prompt_tokens=Sum("prompt_tokens"), completion_tokens=Sum("completion_tokens"),
        cost_usd=Sum("cost_usd"),
    )
    return {key: value or 0 for key, value in totals.items()}
