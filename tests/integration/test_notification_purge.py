"""Retention of the e-mail outbox (workflows/notifications.py purge_finished, the hourly
workflows.tasks.purge_notifications), against PostgreSQL: rows that are done with go after
REVIEWDESK_NOTIFICATION_RETENTION_DAYS, pending ones never, in batches, with the partial index."""
import socket
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from reviewdesk.celery import app
from tests.integration.conftest import drafted, submit
from workflows import notifications, tasks
from workflows.models import AuditEvent, Notification, NotificationKind, NotificationState


@pytest.fixture
def recipient(make_user):
    user = make_user("outbox-reviewer", "reviewer", "support-reviewers")  # reviews customer replies
    user.email = "outbox-reviewer@example.org"
    user.save()
    return user


def _row(user, state: str, *, days_old: float, key: str = "") -> Notification:
    return Notification.objects.create(recipient=user, kind=NotificationKind.NEW_WORK, state=state,
                                       created_at=timezone.now() - timedelta(days=days_old), dedupe_key=key)


def _ids(*rows) -> set[int]:
    return {r.pk for r in rows}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_rows_done_with_go_after_the_retention_pending_ones_never(recipient, settings):
    settings.REVIEWDESK_NOTIFICATION_RETENTION_DAYS = 30
    old_done = [_row(recipient, state, days_old=31) for state in
                (NotificationState.SENT, NotificationState.SKIPPED, NotificationState.FAILED)]
    young_done = [_row(recipient, state, days_old=29) for state in
                  (NotificationState.SENT, NotificationState.SKIPPED, NotificationState.FAILED)]
    # A message still owed is kept however old it is (a broker and beat down for a month).
    old_pending = _row(recipient, NotificationState.PENDING, days_old=400)
    events_before = AuditEvent.objects.count()

    assert tasks.purge_notifications() == 3
    assert set(Notification.objects.values_list("pk", flat=True)) == _ids(*young_done, old_pending)
    assert not Notification.objects.filter(pk__in=_ids(*old_done)).exists()
    # An outbox row is not evidence: the purge writes no audit event (see purge_finished).
    assert AuditEvent.objects.count() == events_before
    # Idempotent: the next run finds nothing.
    assert tasks.purge_notifications() == 0
    # The retention counts from when the row was written: just under a day later the 29-day-old
    # rows are not yet past 30 days; two days later they are.
    assert notifications.purge_finished(now=timezone.now() + timedelta(days=1) - timedelta(minutes=1)) == 0
    assert notifications.purge_finished(now=timezone.now() + timedelta(days=2)) == 3
    assert list(Notification.objects.values_list("pk", flat=True)) == [old_pending.pk]


def test_zero_days_keeps_every_row(recipient, settings):
    settings.REVIEWDESK_NOTIFICATION_RETENTION_DAYS = 0
    kept = [_row(recipient, NotificationState.SENT, days_old=3650), _row(recipient, NotificationState.FAILED, days_old=90)]
    assert tasks.purge_notifications() == 0
    assert set(Notification.objects.values_list("pk", flat=True)) == _ids(*kept)


def test_a_backlog_is_deleted_batch_by_batch_and_a_run_stops_at_its_time_budget(recipient, settings):
    settings.REVIEWDESK_NOTIFICATION_RETENTION_DAYS = 30
    Notification.objects.bulk_create([
        Notification(recipient=recipient, kind=NotificationKind.OVERDUE, state=NotificationState.SENT,
                     created_at=timezone.now() - timedelta(days=40, minutes=i)) for i in range(7)])
    young = _row(recipient, NotificationState.SENT, days_old=1)
    # No time left after the first batch: one batch of 3, the oldest first; the next run goes on.
    assert notifications.purge_finished(batch=3, seconds=0) == 3
    oldest_left = Notification.objects.exclude(pk=young.pk).order_by("created_at").first().created_at
    assert oldest_left > timezone.now() - timedelta(days=40, minutes=4)
    # With time: batch after batch until a short one (3 + 1).
    assert notifications.purge_finished(batch=3) == 4
    assert list(Notification.objects.values_list("pk", flat=True)) == [young.pk]


def test_a_mail_given_up_for_real_is_purged_once_old(demo, recipient, customer_reply_input, settings):
    """The whole path: a digest queued, the mail server failing until the row is given up
    (REVIEWDESK_MAIL_MAX_ATTEMPTS), then the row ages past the retention and the task deletes it.
    The review it was about, and its audit trail, stay."""
    settings.REVIEWDESK_NOTIFICATION_RETENTION_DAYS = 30
    settings.REVIEWDESK_MAIL_MAX_ATTEMPTS = 1
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", _closed_port(), 2
    submission = drafted(submit(demo, customer_reply_input), lane="blocking")
    ids = notifications.queue_new_work_digests()
    assert ids and notifications.deliver_many(ids) == {"failed": len(ids)}
    assert mail.outbox == []
    events = AuditEvent.objects.count()

    assert tasks.purge_notifications() == 0  # given up today: kept for the operators to see
    Notification.objects.filter(pk__in=ids).update(created_at=timezone.now() - timedelta(days=31))
    assert tasks.purge_notifications() == len(ids)
    assert not Notification.objects.filter(pk__in=ids).exists()
    assert submission.review_tasks.get().announced_at is not None  # no second digest for it
    assert notifications.queue_new_work_digests() == []
    assert AuditEvent.objects.count() == events


def test_the_purge_reads_the_partial_index_not_the_whole_outbox(recipient):
    # The purge's query must keep the partial index's condition (state <> 'pending'): otherwise
    # PostgreSQL reads the whole outbox every hour (measured on 1,000,000 rows: a 150 ms scan per
    # statement instead of 0.2 ms). The DELETE the purge really ran is explained again with
    # sequential scans off, so the small test table cannot hide a query the index cannot serve.
    _row(recipient, NotificationState.SENT, days_old=31)
    with CaptureQueriesContext(connection) as queries:
        assert notifications.purge_finished() == 1
    (delete,) = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + delete)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "on notification_finished_idx" in plan and "Seq Scan" not in plan, plan


def test_beat_runs_the_purge_hourly_and_the_worker_knows_the_task():
    entry = django_settings.CELERY_BEAT_SCHEDULE["purge-notifications"]
    assert entry == {"task": "workflows.tasks.purge_notifications", "schedule": 3600.0}
    assert entry["task"] in app.tasks
    assert django_settings.REVIEWDESK_NOTIFICATION_RETENTION_DAYS == 30  # the documented default
