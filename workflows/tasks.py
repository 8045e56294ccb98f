"""Thin, idempotent Celery tasks: take ids, claim, call a service."""
from __future__ import annotations

import logging
import time
from contextlib import nullcontext

from celery import shared_task
from django.db import DatabaseError, connection

from . import heartbeat, selectors, services
from .dispatch import enqueue_generation
from .pipeline import run
from .pipeline.engines import default_engine
from .pipeline.types import RunOptions
from .vocab import FailureKind

log = logging.getLogger(__name__)

# A task that cannot reach the database (pool exhausted, connection dropped) is retried, never
# dropped: its submission would otherwise wait for the sweep.
_DB_RETRY = {"autoretry_for": (DatabaseError,), "retry_backoff": 1, "retry_backoff_max": 30,
             "retry_jitter": True, "max_retries": 20}


@shared_task(bind=True, acks_late=True, name="workflows.tasks.generate_draft", **_DB_RETRY)
def generate_draft(self, submission_id: int) -> None:
    submission = services.generation_claim(submission_id=submission_id)
    if submission is None:
        log.info("submission %s: nothing to generate (already claimed or done)", submission_id)
        return
    attempt = submission.attempts
    spec = submission.workflow_version.spec
    # The model call takes seconds: give the connection back to the pool for its duration, so
    # calls in flight are not capped by the number of database connections. (Inside an outer
    # transaction, as when a test runs the task in-process, there is nothing to give back.)
    in_process = connection.in_atomic_block
    if not in_process:
        connection.close()
    # While this attempt runs, its claim's heartbeat is kept fresh, so the sweep can tell it from
    # one whose worker died (workflows/heartbeat.py). Not inside an outer transaction: the beat's
    # own connection would wait for the lock that transaction holds on the row.
    with nullcontext() if in_process else heartbeat.beating(submission_id, attempt):
        _generate(submission_id, attempt, submission, spec)


def _generate(submission_id: int, attempt: int, submission, spec) -> None:
    sink = draft_sink(submission, attempt)
    try:
        _draft_and_record(submission_id, attempt, submission, spec, sink)
    finally:
        if sink is not None:
            # After the outcome is stored (lane, or failure): the page that reads "end" asks
            # for the new state, which withdraws the text if the draft was held after all.
            sink.finish()


def _draft_and_record(submission_id: int, attempt: int, submission, spec, sink) -> None:
    try:
        result = run(spec, submission.data, engine=default_engine(), feedback=submission.regenerate_feedback,
                     options=RunOptions(text_sink=sink))
    except Exception as exc:
        # Anything unexpected (a soft time limit, a bug) must still end the attempt visibly:
        # a submission left in "generating" would show a spinner forever.
        log.exception("submission %s attempt %s: generation failed", submission_id, attempt)
        services.generation_fail(
            submission_id=submission_id, attempt=attempt, kind=FailureKind.INTERNAL,
            reason=f"{type(exc).__name__}: {exc}"[:1000],
        )
        return
    if result.failed:
        log.warning("submission %s attempt %s: no model answered (%s)", submission_id, attempt, result.failure.kind)
        _persist(lambda: services.generation_fail(
            submission_id=submission_id, attempt=attempt, kind=result.failure.kind,
            reason=result.failure.detail, calls=result.calls,
        ))
        return
    draft = _persist(lambda: services.draft_record(submission_id=submission_id, attempt=attempt, result=result))
    if draft is not None:
        log.info("submission %s attempt %s: %s drafted, score %.2f, lane %s, %d calls, $%s",
                 submission_id, attempt, result.model, result.score, draft.lane, len(result.calls), result.cost_usd)


def draft_sink(submission, attempt: int):
    """Where this attempt's text goes while it is written, if its submitter may watch it
    (workflows/draft_stream.py decides from the definition and the automation hold)."""
    from . import draft_stream

    if not draft_stream.available() or not draft_stream.streams_to_submitter(submission.workflow_version.spec):
        return None
    # Read only for workflows that could stream (one query): a held workflow blocks every draft.
    if draft_stream.automation_held(submission.workflow_version.workflow_id):
        return None
    return draft_stream.RedisDraftSink(submission.pk, attempt)


_PERSIST_WAITS = (0.2, 0.5, 1, 2, 4)


def _persist(store):
    """Store a result the model call already paid for, retrying through a database blip (a
    dropped connection, a failover) instead of throwing the draft away; a redelivered task
    would find the claim still fresh and do nothing until the sweep took it over."""
    for wait in _PERSIST_WAITS:
        try:
            return store()
        except DatabaseError:
            log.warning("storing the result failed; retrying in %ss", wait, exc_info=True)
            connection.close()
            time.sleep(wait)
    return store()


@shared_task(name="workflows.tasks.requeue_stalled_generations")
def requeue_stalled_generations() -> int:
    """Re-send generation for submissions whose task was lost (broker down at commit, worker
    killed mid-call). Safe to run at any time: generate_draft claims before it works."""
    ids = selectors.stalled_generation_ids()
    for submission_id in ids:
        enqueue_generation(submission_id)
    services.generation_requeued(submission_ids=ids)
    if ids:
        log.info("requeued generation for %d stalled submissions", len(ids))
    return len(ids)


@shared_task(name="workflows.tasks.retry_failed_generations")
def retry_failed_generations() -> int:
    """Send failed submissions again once a model they can use answers again.

    Only failures of kind provider_unavailable (every model down or its circuit open) are
    retried, only when the primary model's or a fallback's circuit is no longer open, and at
    most once per REVIEWDESK_AUTO_RETRY_SECONDS per submission, so a provider that is still
    down is not hammered by the backlog.
    """
    ids = selectors.failed_generations_to_retry()
    retried = [pk for pk in ids if services.submission_retry(submission_id=pk, reason="provider available again")]
    if retried:
        log.info("retried %d submissions after their provider recovered", len(retried))
    return len(retried)


@shared_task(name="workflows.tasks.purge_expired_submissions", **_DB_RETRY)
def purge_expired_submissions() -> int:
    """Erase the personal data of submissions past their workflow's `retention_days` (legal
    holds aside), in batches of 500, each batch one transaction and one `retention.purged`
    event. Idempotent: an erased submission is never picked again."""
    total = 0
    while purged := services.purge_expired():
        total += len(purged)
    if total:
        log.info("retention purge erased %d submissions", total)
    return total


@shared_task(name="workflows.tasks.verify_audit_checkpoint")
def verify_audit_checkpoint() -> dict:
    """Verify the audit events since the last checkpoint and record the new head (audit.verified)."""
    from .audit_chain import verify_checkpoint

    checkpoint = verify_checkpoint()
    if not checkpoint.ok:
        log.error("audit chain broken at event %s: %s", checkpoint.broken_at, checkpoint.reason)
    return {"from_id": checkpoint.from_id, "to_id": checkpoint.to_id, "ok": checkpoint.ok}


@shared_task(name="workflows.tasks.anchor_audit_head")
def anchor_audit_head() -> dict | None:
    """Write the verified audit head outside the database (workflows/audit_chain.py)."""
    from .audit_chain import AnchorError, anchor_head

    try:
        anchor = anchor_head()
    except AnchorError as exc:
        log.error("audit anchor not written: %s", exc)
        return None
    return {"event_id": anchor.event_id, "count": anchor.count, "location": anchor.location}


@shared_task(bind=True, acks_late=True, name="workflows.tasks.run_audit_export", max_retries=3)
def run_audit_export(self, job_id: int) -> str:
    """Write an export job's file and manifest (default queue). Safe to run twice: only a
    queued job, or a running one whose worker went silent, is claimed; a job another worker is
    writing now is looked at again once it would count as silent."""
    job, busy = services.audit_export_job_claim(job_id=job_id)
    if job is None:
        if busy:
            raise self.retry(countdown=services.audit_exports.STALE_AFTER.total_seconds() + 5)
        log.info("export job %s: nothing to do (already done or failed)", job_id)
        return "skipped"
    job = services.audit_export_job_run(job=job)
    log.info("export job %s: %s, %s rows", job_id, job.state, job.rows_written)
    return job.state


@shared_task(name="workflows.tasks.chain_audit", ignore_result=True)
def chain_audit() -> int:
    """Link the committed unchained audit events (workflows/audit.py chain_all). Sent a moment
    after each commit that recorded events, and by beat as a safety net; any number may run at
    once on any workers: one links (pg_try_advisory_xact_lock), the others return at once."""
    from .audit import chain_all

    try:
        return chain_all()
    except DatabaseError:
        log.warning("audit chaining failed; the next run resumes where it stopped", exc_info=True)
        return 0


# --- Notifications and SLA (issue 8, workflows/notifications.py) ------------------------------


@shared_task(name="workflows.tasks.check_review_sla", **_DB_RETRY)
def check_review_sla() -> dict:
    """Mark open reviews past their due time and escalate those past the second limit, once
    each, then send the reviewers' messages (one per reviewer and kind). Safe to run twice: a
    marked or escalated review is never taken up again."""
    from . import notifications

    overdue, overdue_mail = notifications.mark_overdue()
    escalated, escalation_mail = notifications.escalate_due()
    sent = notifications.deliver_many(overdue_mail + escalation_mail)
    if overdue or escalated:
        log.info("SLA: %d reviews overdue, %d escalated; e-mails %s", overdue, escalated, sent)
    return {"overdue": overdue, "escalated": escalated, "mail": sent}


@shared_task(name="workflows.tasks.send_review_digests", **_DB_RETRY)
def send_review_digests() -> dict:
    """One e-mail per reviewer listing the new blocking reviews they may take (each review is
    announced once)."""
    from . import notifications

    return notifications.deliver_many(notifications.queue_new_work_digests())


@shared_task(name="workflows.tasks.deliver_notification", **_DB_RETRY)
def deliver_notification(notification_id: int) -> str:
    """Send one e-mail (a submitter's, queued when a decision committed). A failure is logged
    and retried by deliver_notifications with a growing wait; sending twice is refused."""
    from . import notifications

    return notifications.deliver(notification_id)


@shared_task(name="workflows.tasks.deliver_notifications", **_DB_RETRY)
def deliver_notifications() -> dict:
    """Send the e-mails whose retry time has come (or whose task was lost with the broker)."""
    from . import notifications

    return notifications.deliver_due()


@shared_task(name="workflows.tasks.purge_notifications", ignore_result=True, **_DB_RETRY)
def purge_notifications() -> int:
    """Outbox rows sent, skipped or given up more than REVIEWDESK_NOTIFICATION_RETENTION_DAYS
    ago: deleted (pending ones never). Safe to run twice: a deleted row is not found again."""
    from . import notifications

    purged = notifications.purge_finished()
    if purged:
        log.info("notification purge deleted %d old e-mail rows", purged)
    return purged


@shared_task(name="workflows.tasks.resend_queued_audit_exports", ignore_result=True)
def resend_queued_audit_exports() -> int:
    """Export jobs whose task message was lost (broker down at commit) get it again."""
    return len(services.audit_exports.audit_export_jobs_resend())


@shared_task(name="workflows.tasks.purge_audit_export_jobs", ignore_result=True)
def purge_audit_export_jobs() -> int:
    """Finished export jobs past REVIEWDESK_EXPORT_RETENTION_DAYS: files and rows deleted."""
    return len(services.audit_exports.audit_export_jobs_purge())
