"""E-mail notifications and the review SLA (issue 8).

Every message is a `Notification` row (an outbox) written in the transaction that decides it
is due, and sent afterwards from a Celery task through Django's e-mail backend; never inside a
request's transaction, so a slow or failing mail server cannot hold up or undo a decision.

* Reviewers: a digest of new blocking reviews (`queue_new_work_digests`, every
  REVIEWDESK_DIGEST_MINUTES), reviews that passed their due time (`mark_overdue`), and reviews
  escalated to their group (`escalate_due`). Each review is taken up once (`announced_at`,
  `overdue_at`, `escalated_at`, set in the transaction that writes the rows), and each run
  writes at most one message per reviewer listing everything new for them.
* Submitters: a decision on their request, or the withdrawal of a text released earlier
  (`decision_made`, `output_retracted`: called on commit by the review services).
* Who gets what: the recipient must be able to see the item now (the selectors decide, the same
  rule as the pages), be active, have an address, and not have turned that kind off
  (`NotificationPreference`; no row means everything on).
* Sending (`deliver`) claims a row with one conditional UPDATE, so a row is sent once however
  many tasks try; a failure waits 1, 2, 4 ... 60 minutes and tries again, up to
  REVIEWDESK_MAIL_MAX_ATTEMPTS, each failure logged.
* Retention (`purge_finished`): rows that are done with (sent, skipped, given up) are deleted
  REVIEWDESK_NOTIFICATION_RETENTION_DAYS after they were written; pending rows never.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError
from simple_history.utils import bulk_update_with_history

from . import audit, selectors
from .models import (
    Decision,
    Lane,
    Notification,
    NotificationPreference,
    NotificationState,
    RejectReason,
    ReviewTask,
    Submission,
    SubmissionState,
    WorkflowVersion,
)
from .models import NotificationKind as Kind
from .roles import REVIEWER, SUBMITTER, has_role, system_user
from .vocab import AuditAction

log = logging.getLogger(__name__)

# Reviews taken up per run: one transaction, one message per reviewer. More wait for the next run.
BATCH = 2000
# A message lists this many reviews, then says how many more there are.
LISTED = 50
# How long a sender holds a row it is sending (a worker that dies mid-send frees it after this).
CLAIM = timedelta(minutes=5)
DELIVER_TASK = "workflows.tasks.deliver_notification"
# Old rows deleted per statement. Each batch commits on its own, so the purge never holds many
# row locks and a large first backlog is worked off a batch at a time.
PURGE_BATCH = 1000
# A purge run stops after this long with old rows left (the next hourly run goes on): far inside
# the task's time limit, however large the backlog of a first run.
PURGE_SECONDS = 60
REVIEWER_KINDS = (Kind.NEW_WORK, Kind.OVERDUE, Kind.ESCALATION)
SUBMITTER_KINDS = (Kind.DECISION, Kind.RETRACTION)


def absolute_url(path: str) -> str:
    """A link for an e-mail: the site's address (REVIEWDESK_SITE_URL) and the page's path.
    Signed-out readers land on the log-in page, which sends them on to it (?next=)."""
    return settings.REVIEWDESK_SITE_URL + path


# --- preferences -----------------------------------------------------------------------------


def kinds_for(user) -> list[Kind]:
    """The messages a user can receive in their roles (the preferences page offers these)."""
    kinds = list(REVIEWER_KINDS) if has_role(user, REVIEWER) else []
    if has_role(user, SUBMITTER) or Submission.objects.filter(submitted_by=user).exists():
        kinds += SUBMITTER_KINDS
    return kinds


def preference_for(user) -> NotificationPreference:
    """The user's choices; an unsaved row with everything on when they never chose."""
    return NotificationPreference.objects.filter(user=user).first() or NotificationPreference(user=user)


@transaction.atomic
def preferences_set(*, user, choices: dict[str, bool]) -> NotificationPreference:
    """Save the user's own choices for the kinds their roles offer; other kinds keep their value."""
    preference, _ = NotificationPreference.objects.select_for_update().get_or_create(user=user)
    for kind in kinds_for(user):
        if kind.value in choices:
            setattr(preference, kind.value, bool(choices[kind.value]))
    preference.save()
    return preference


def _wants(user, kind: str) -> bool:
    return bool(user.is_active and user.email and preference_for(user).wants(kind))


def _willing(users, kind: str):
    """Active users with an address who did not turn ``kind`` off."""
    return (users.filter(is_active=True).exclude(email="")
            .exclude(**{f"notification_preference__{kind}": False}).distinct())


# --- reviewers: new work, overdue, escalated -----------------------------------------------


def _queue_for_reviewers(tasks: list[ReviewTask], kind: Kind) -> list[Notification]:
    """One message per reviewer who may see some of ``tasks`` and wants ``kind``; it lists
    those tasks (the selectors decide what each reviewer sees, as on the pages)."""
    if not tasks:
        return []
    users = get_user_model().objects.filter(groups__name=REVIEWER)
    if kind == Kind.ESCALATION:
        users = users.filter(groups__in={t.escalated_to_id for t in tasks})
    else:
        users = users.filter(groups__reviewed_workflows__in={t.submission.workflow_version.workflow_id for t in tasks})
    ids = [t.pk for t in tasks]
    rows = []
    for user in _willing(users, kind).order_by("pk"):
        visible = selectors.review_tasks_for(user).filter(pk__in=ids)
        if kind == Kind.ESCALATION:  # only what went to their group, not what went elsewhere
            visible = visible.filter(escalated_to__in=user.groups.all())
        listed = list(visible.order_by("due_at", "pk").values_list("pk", flat=True))
        if listed:
            rows.append(Notification(recipient=user, kind=kind, review_task_ids=listed))
    return Notification.objects.bulk_create(rows)


def _take_up(queryset) -> list[ReviewTask]:
    """Lock up to BATCH open tasks of ``queryset`` that no other run holds."""
    return list(queryset.open().select_for_update(skip_locked=True, of=("self",))
                .select_related("submission__workflow_version").order_by("created_at", "pk")[:BATCH])


def queue_new_work_digests(*, now=None) -> list[int]:
    """Take up the open blocking reviews no digest has announced yet: one message per reviewer
    listing those they may take. Returns the ids of the messages to send."""
    now = now or timezone.now()
    with transaction.atomic():
        tasks = _take_up(ReviewTask.objects.filter(lane=Lane.BLOCKING_REVIEW, announced_at__isnull=True))
        # Announcing is bookkeeping, not a fact about the review: no history row, no event.
        ReviewTask.objects.filter(pk__in=[t.pk for t in tasks]).update(announced_at=now)
        return [n.pk for n in _queue_for_reviewers(tasks, Kind.NEW_WORK)]


def mark_overdue(*, now=None) -> tuple[int, list[int]]:
    """Mark open reviews past their due time, once each (`review.overdue`), and write one
    message per reviewer listing the newly overdue ones. Returns (marked, message ids)."""
    now = now or timezone.now()
    with transaction.atomic(), audit.batch():
        tasks = _take_up(ReviewTask.objects.filter(overdue_at__isnull=True, due_at__lt=now))
        if not tasks:
            return 0, []
        system = system_user()
        for task in tasks:
            task.overdue_at = now
        bulk_update_with_history(tasks, ReviewTask, ["overdue_at"], default_user=system,
                                 default_change_reason="past its due time")
        for task in tasks:
            audit.record(action=AuditAction.REVIEW_OVERDUE, obj=task, actor=system,
                         workflow_version=task.submission.workflow_version,
                         payload={"submission_id": task.submission_id, "lane": task.lane,
                                  "due_at": task.due_at.isoformat()})
        return len(tasks), [n.pk for n in _queue_for_reviewers(tasks, Kind.OVERDUE)]


def _versions_with_escalation() -> list[WorkflowVersion]:
    # A handful of versions, each parsed once per process (WorkflowVersion.spec); cheaper than
    # asking the JSON column, where an absent group and a null one look alike.
    # Only the key columns: a parsed spec in the process cache needs no definition loaded.
    versions = WorkflowVersion.objects.only("pk", "definition_hash", "workflow_id", "number").order_by("pk")
    return [v for v in versions if v.spec.routing.escalation_group]


def escalate_due(*, now=None) -> tuple[int, list[int]]:
    """Hand open reviews older than their workflow's `routing.escalate_after_minutes` to its
    `routing.escalation_group` (the version the request was made with decides): `escalated_at`,
    `escalated_to`, a `review.escalated` event each, then one message per group member listing
    everything escalated to them in this run. Returns (escalated, message ids)."""
    now = now or timezone.now()
    with transaction.atomic(), audit.batch():
        escalated: list[ReviewTask] = []
        for version in _versions_with_escalation():
            escalated += _escalate_version(version, now)
        if escalated:
            bulk_update_with_history(escalated, ReviewTask, ["escalated_at", "escalated_to"], default_user=system_user(),
                                     default_change_reason="escalated")
        return len(escalated), [n.pk for n in _queue_for_reviewers(escalated, Kind.ESCALATION)]


def _escalate_version(version: WorkflowVersion, now) -> list[ReviewTask]:
    routing = version.spec.routing
    group, _ = Group.objects.get_or_create(name=routing.escalation_group)
    escalated = []
    for lane, minutes in routing.escalate_after_minutes.items():
        tasks = _take_up(ReviewTask.objects.filter(submission__workflow_version=version, lane=lane,
                                                   escalated_at__isnull=True,
                                                   created_at__lt=now - timedelta(minutes=minutes)))
        for task in tasks:
            task.escalated_at, task.escalated_to = now, group
            audit.record(action=AuditAction.REVIEW_ESCALATED, obj=task, actor=system_user(), workflow_version=version,
                         payload={"submission_id": task.submission_id, "lane": task.lane, "group_id": group.pk,
                                  "group": group.name, "after_minutes": minutes})
        escalated += tasks
    return escalated


# --- submitters: decisions and retractions (called on commit by the review services) ---------


def decision_made(task_id: int) -> None:
    """A reviewer decided ``task_id`` (committed): tell the submitter once the request is
    settled (approved and released, or rejected). A first of two approvals settles nothing."""
    _after_commit(_queue_decision, task_id)


def output_retracted(submission_id: int) -> None:
    """A released text was withdrawn (committed): tell the submitter not to use it."""
    _after_commit(_queue_retraction, submission_id)


def _after_commit(queue, object_id: int) -> None:
    # The decision is committed whatever happens here: a failure is logged, never raised into
    # the request that made it.
    try:
        notification_id = queue(object_id)
    except Exception:
        log.exception("could not queue the e-mail about %s %s", queue.__name__, object_id)
        return
    if notification_id is not None:
        enqueue_delivery(notification_id)


def _queue_one(user, kind: Kind, *, key: str, **about) -> int | None:
    if not _wants(user, kind):
        return None
    notification, created = Notification.objects.get_or_create(recipient=user, dedupe_key=key,
                                                               defaults={"kind": kind, **about})
    return notification.pk if created else None


def _queue_decision(task_id: int) -> int | None:
    task = ReviewTask.objects.select_related("submission__submitted_by").get(pk=task_id)
    submission = task.submission
    settled = {Decision.APPROVE: SubmissionState.APPROVED, Decision.EDIT: SubmissionState.APPROVED,
               Decision.REJECT: SubmissionState.REJECTED}
    if settled.get(task.decision) != submission.state:
        return None
    if task.sampled and task.decision == Decision.APPROVE:
        # The audit sample's check of an auto-approved draft, unchanged: nothing changed for the
        # submitter, who has had the text since it was drafted.
        return None
    return _queue_one(submission.submitted_by, Kind.DECISION, key=f"decision:{task.pk}",
                      submission=submission, review_task=task)


def _queue_retraction(submission_id: int) -> int | None:
    submission = Submission.objects.select_related("submitted_by").get(pk=submission_id)
    # A rejection says so in its own message (with the withdrawal); released again since: moot.
    if submission.state == SubmissionState.REJECTED or submission.retracted_at is None:
        return None
    key = f"retraction:{submission.pk}:{submission.retracted_at.timestamp():.6f}"
    return _queue_one(submission.submitted_by, Kind.RETRACTION, key=key, submission=submission)


# --- sending ---------------------------------------------------------------------------------


def enqueue_delivery(notification_id: int) -> None:
    """Send one message from a worker. With the broker down the row waits for the periodic
    delivery (`deliver_due`)."""
    try:
        current_app.send_task(DELIVER_TASK, args=[notification_id])
    except BrokerError:
        log.warning("broker unavailable; e-mail %s will be sent by the periodic delivery", notification_id)
    except Exception:  # called after a commit: nothing may turn a saved decision into an error page
        log.exception("could not send e-mail %s to a worker; the periodic delivery will", notification_id)


def deliver_many(notification_ids: list[int]) -> dict[str, int]:
    outcomes: dict[str, int] = {}
    for notification_id in notification_ids:
        outcome = deliver(notification_id)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def deliver_due(*, limit: int = 200) -> dict[str, int]:
    """Send the rows whose time has come: first tries that never ran, retries after a failure."""
    due = (Notification.objects.filter(state=NotificationState.PENDING, next_attempt_at__lte=timezone.now())
           .order_by("next_attempt_at", "pk").values_list("pk", flat=True)[:limit])
    return deliver_many(list(due))


def deliver(notification_id: int) -> str:
    """Send one message if it is still due: "sent", "skipped" (turned off, or nothing left the
    recipient may see), "retry" (the mail server failed; tried again later), "failed" (given
    up) or "not due" (sent already, or another sender holds it)."""
    now = timezone.now()
    claimed = Notification.objects.filter(pk=notification_id, state=NotificationState.PENDING,
                                          next_attempt_at__lte=now).update(next_attempt_at=now + CLAIM,
                                                                            attempts=F("attempts") + 1)
    if not claimed:
        return "not due"
    notification = Notification.objects.select_related("recipient", "submission", "review_task").get(pk=notification_id)
    try:
        message = compose(notification) if _wants(notification.recipient, notification.kind) else None
        if message is not None:
            message.send()
    except Exception as exc:  # SMTP refusals, connection errors, timeouts: all retried the same way
        return _failed(notification, exc)
    state = NotificationState.SENT if message is not None else NotificationState.SKIPPED
    Notification.objects.filter(pk=notification_id).update(state=state, sent_at=timezone.now() if message else None,
                                                           last_error="")
    return "sent" if message is not None else "skipped"


def _failed(notification: Notification, exc: Exception) -> str:
    error = f"{type(exc).__name__}: {exc}"[:500]
    if notification.attempts >= settings.REVIEWDESK_MAIL_MAX_ATTEMPTS:
        log.error("e-mail %s (%s to user %s) given up after %d tries: %s", notification.pk, notification.kind,
                  notification.recipient_id, notification.attempts, error)
        Notification.objects.filter(pk=notification.pk).update(state=NotificationState.FAILED, last_error=error)
        return "failed"
    wait = timedelta(minutes=min(2 ** (notification.attempts - 1), 60))
    log.warning("e-mail %s (%s to user %s) failed, try %d; next in %s: %s", notification.pk, notification.kind,
                notification.recipient_id, notification.attempts, wait, error)
    Notification.objects.filter(pk=notification.pk).update(next_attempt_at=timezone.now() + wait, last_error=error)
    return "retry"


# --- the messages ----------------------------------------------------------------------------


def compose(notification: Notification) -> EmailMessage | None:
    """The message as the recipient may read it now, or None when nothing is left to say."""
    user = notification.recipient
    if notification.kind in REVIEWER_KINDS:
        subject, context = _reviewer_message(notification, user)
    else:
        subject, context = _submitter_message(notification, user)
    if subject is None:
        return None
    context.update(user=user, preferences_url=absolute_url(reverse("notification_preferences")))
    body = render_to_string(f"workflows/mail/{notification.kind}.txt", context)
    return EmailMessage(f"[ReviewDesk] {subject}", body, settings.DEFAULT_FROM_EMAIL, [user.email])


def _reviewer_message(notification: Notification, user):
    visible = selectors.review_tasks_for(user).open().filter(pk__in=notification.review_task_ids)
    if notification.kind == Kind.ESCALATION:
        visible = visible.filter(escalated_to__in=user.groups.all())
    count = visible.count()
    if not count:
        return None, {}
    tasks = list(visible.select_related("escalated_to").order_by("due_at", "pk")[:LISTED])
    reviews = f"{count} review{'s' if count != 1 else ''}"
    subject = {
        Kind.NEW_WORK: f"{reviews} waiting for you",
        Kind.OVERDUE: f"{reviews} past {'their' if count != 1 else 'its'} due time",
        Kind.ESCALATION: f"{reviews} escalated to {_group_names(tasks)}",
    }[notification.kind]
    items = [{"number": t.submission_id, "workflow": t.submission.workflow_version.workflow.name,
              "lane": Lane(t.lane).label, "due_at": t.due_at, "url": absolute_url(reverse("review_detail", args=[t.pk]))}
             for t in tasks]
    return subject, {"items": items, "more": count - len(items), "count": count,
                     "queue_url": absolute_url(reverse("review_queue"))}


def _group_names(tasks: list[ReviewTask]) -> str:
    names = sorted({t.escalated_to.name for t in tasks if t.escalated_to})
    return names[0] if len(names) == 1 else "your groups"


def _submitter_message(notification: Notification, user):
    submission = notification.submission
    if submission is None or submission.submitted_by_id != user.pk:
        return None, {}
    context = {"number": submission.pk, "workflow": submission.workflow_version.workflow.name,
               "url": absolute_url(reverse("submission_detail", args=[submission.pk]))}
    if notification.kind == Kind.RETRACTION:
        return f"Do not use the text released for your request #{submission.pk}", context
    task = notification.review_task
    if task.decision in (Decision.APPROVE, Decision.EDIT):
        context.update(approved=True, edited=task.decision == Decision.EDIT)
        return f"Your request #{submission.pk} was approved", context
    # The reason in plain words; the reviewer's own text only where the request's page shows it.
    context.update(approved=False, reason=RejectReason(task.reason_code).label if task.reason_code else "",
                   reason_text=task.reason_text if selectors.may_see_drafts(user, submission) else "",
                   retracted=submission.retracted_at is not None)
    return f"Your request #{submission.pk} was not approved", context


# --- retention -------------------------------------------------------------------------------


def purge_finished(*, now=None, batch: int = PURGE_BATCH, seconds: float = PURGE_SECONDS) -> int:
    """Delete the rows that are done with (sent, skipped, or given up after
    REVIEWDESK_MAIL_MAX_ATTEMPTS) written more than REVIEWDESK_NOTIFICATION_RETENTION_DAYS ago,
    ``batch`` at a time for up to ``seconds``; 0 days keeps every row. A pending row is never
    deleted, however old: it is a message still owed. Returns the number deleted.

    No audit event, unlike the export purge: an outbox row is a copy of a message, not evidence.
    The audit chain records the decisions, overdue marks and escalations the messages were about,
    and no event, page or link points at a Notification row (e-mails link to reviews and
    requests). Nothing is re-sent after a purge either: a message is due when its event commits
    (a decision, a retraction at a given time) or when a review is first announced, overdue or
    escalated, which ReviewTask itself records; ``dedupe_key`` only has to outlive the moment a
    hook could run twice, never 30 days.
    """
    days = settings.REVIEWDESK_NOTIFICATION_RETENTION_DAYS
    if days == 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    # The same condition as notification_finished_idx, so the planner reads only old rows.
    old = Notification.objects.exclude(state=NotificationState.PENDING).filter(created_at__lt=cutoff)
    deadline = time.monotonic() + seconds
    total = 0
    while True:
        # One DELETE ... WHERE id IN (SELECT id ... LIMIT n): rows deleted by a purge running at
        # the same time are simply not found again, so two runs at once are harmless.
        deleted, _ = Notification.objects.filter(pk__in=old.order_by("created_at").values("pk")[:batch]).delete()
        total += deleted
        if deleted < batch or time.monotonic() > deadline:
            return total
