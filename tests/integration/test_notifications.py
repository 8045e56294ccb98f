"""E-mail notifications and the review SLA (issue 8), against PostgreSQL and Django's locmem
mail backend (Django's real backend API; the test runner installs it).

Reviews are drafted in-process from a hand-made completion; decisions go through the review
services, whose on-commit hooks are run with django_capture_on_commit_callbacks. The one test
that needs the Celery worker proves the message is sent there, after the commit.
"""
import re
import socket
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.db import transaction
from django.test import Client
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from tests.commit_hooks import app_hooks
from tests.conftest import wait_for
from tests.integration.conftest import completion, drafted, submit
from tests.views.test_fuzz import FUZZ, _assert_no_server_error, _post, bodies
from workflows import notifications, services, tasks
from workflows.models import (
    AuditEvent,
    DomainError,
    Notification,
    NotificationKind,
    NotificationPreference,
    NotificationState,
    ReviewTask,
    SubmissionState,
)

SITE = "https://reviewdesk.example.org"


@pytest.fixture(autouse=True)
def site(settings):
    settings.REVIEWDESK_SITE_URL = SITE


@pytest.fixture
def reviewers(demo, make_user):
    """Two reviewers of customer replies (the demo reviewer reviews every demo workflow), one of
    underwriting memos only, each with an address."""
    people = {
        "reviewer": demo.users["reviewer"],
        "second": make_user("second-reviewer", "reviewer", "support-reviewers"),
        "underwriting": make_user("uw-reviewer", "reviewer", "underwriting-reviewers"),
    }
    for user in people.values():
        user.email = f"{user.username}@example.org"
        user.save()
    return people


def blocking(demo, data, *, user=None, version=None):
    if version is None:
        submission = submit(demo, data, user=user)
    else:
        submission = services.submission_create(version=version, user=user or demo.users["submitter"], data=data)
    return drafted(submission, lane="blocking").review_tasks.get()


def mails_to(user):
    return [m for m in mail.outbox if m.to == [user.email]]


def links(message) -> list[str]:
    return re.findall(rf"{re.escape(SITE)}(/\S*)", message.body)


def _claim(task, user):
    return services.review_claim(task_id=task.pk, user=user)


# --- reviewers: the digest of new blocking work ---------------------------------------------


def test_three_blocking_reviews_make_one_digest_per_reviewer(demo, reviewers, customer_reply_input):
    tasks_ = [blocking(demo, customer_reply_input) for _ in range(3)]
    drafted(submit(demo, customer_reply_input), lane="async")  # not blocking: not announced

    outcome = tasks.send_review_digests()

    assert outcome == {"sent": 2}
    for who in ("reviewer", "second"):
        (message,) = mails_to(reviewers[who])
        assert message.subject == "[ReviewDesk] 3 reviews waiting for you"
        assert links(message)[:3] == [f"/review/{t.pk}/" for t in sorted(tasks_, key=lambda t: (t.due_at, t.pk))]
        assert "/account/notifications/" in message.body
        # No form values in a reviewer's digest: the request number, workflow and due time only.
        assert customer_reply_input["customer_name"] not in message.body
        assert customer_reply_input["complaint"] not in message.body
    assert mails_to(reviewers["underwriting"]) == []  # not their workflow
    assert mails_to(demo.users["submitter"]) == []
    assert all(t.announced_at is not None for t in ReviewTask.objects.filter(pk__in=[t.pk for t in tasks_]))

    # Run again (a second beat, a redelivered task): nothing new, nothing sent.
    assert tasks.send_review_digests() == {}
    assert len(mail.outbox) == 2
    # A fourth review arrives: the next digest lists it alone.
    fourth = blocking(demo, customer_reply_input)
    tasks.send_review_digests()
    (latest,) = mails_to(reviewers["second"])[1:]
    assert latest.subject == "[ReviewDesk] 1 review waiting for you"
    assert links(latest)[0] == f"/review/{fourth.pk}/"


def test_the_submitter_who_reviews_is_not_told_about_their_own_request(demo, reviewers, make_user, customer_reply_input):
    dual = make_user("dual-notify", "submitter", "reviewer", "support-reviewers")
    dual.email = "dual@example.org"
    dual.save()
    blocking(demo, customer_reply_input, user=dual)
    tasks.send_review_digests()
    assert mails_to(dual) == []
    assert len(mails_to(reviewers["second"])) == 1


def test_a_reviewer_who_turned_the_digest_off_gets_none(demo, reviewers, customer_reply_input):
    client = Client()
    client.force_login(reviewers["second"])
    response = client.post("/account/notifications/", {"overdue": "on", "escalation": "on"})  # new_work unticked
    assert response.status_code == 302
    assert NotificationPreference.objects.get(user=reviewers["second"]).new_work is False
    blocking(demo, customer_reply_input)

    tasks.send_review_digests()

    assert mails_to(reviewers["second"]) == []
    assert len(mails_to(reviewers["reviewer"])) == 1


def test_a_reviewer_without_an_address_or_inactive_gets_nothing(demo, reviewers, customer_reply_input):
    reviewers["second"].email = ""
    reviewers["second"].save()
    reviewers["reviewer"].is_active = False
    reviewers["reviewer"].save()
    blocking(demo, customer_reply_input)
    tasks.send_review_digests()
    assert mail.outbox == []


# --- reviewers: overdue ---------------------------------------------------------------------


def test_overdue_reviews_are_marked_and_mailed_once(demo, reviewers, customer_reply_input):
    late = [blocking(demo, customer_reply_input) for _ in range(2)]
    on_time = blocking(demo, customer_reply_input)
    ReviewTask.objects.filter(pk__in=[t.pk for t in late]).update(due_at=timezone.now() - timedelta(minutes=5))

    first = tasks.check_review_sla()
    second = tasks.check_review_sla()

    assert first == {"overdue": 2, "escalated": 0, "mail": {"sent": 2}}
    assert second == {"overdue": 0, "escalated": 0, "mail": {}}
    marked = ReviewTask.objects.filter(overdue_at__isnull=False)
    assert set(marked.values_list("pk", flat=True)) == {t.pk for t in late}
    assert ReviewTask.objects.get(pk=on_time.pk).overdue_at is None
    events = AuditEvent.objects.filter(action="review.overdue")
    assert sorted(int(e.object_id) for e in events) == sorted(t.pk for t in late)
    assert all(e.actor_label == "system" for e in events)
    for who in ("reviewer", "second"):
        (message,) = mails_to(reviewers[who])
        assert message.subject == "[ReviewDesk] 2 reviews past their due time"
        assert sorted(links(message)[:2]) == sorted(f"/review/{t.pk}/" for t in late)
    # The marking is in the task's history, attributed to the system user.
    row = ReviewTask.history.filter(id=late[0].pk).order_by("-history_id").first()
    assert row.overdue_at is not None and row.history_user.username == "system"


def test_an_overdue_review_shows_its_badge_in_the_queue(demo, reviewers, customer_reply_input):
    late = blocking(demo, customer_reply_input)
    ReviewTask.objects.filter(pk=late.pk).update(due_at=timezone.now() - timedelta(minutes=1))
    tasks.check_review_sla()
    client = Client()
    client.force_login(reviewers["second"])
    page = client.get("/review/").content.decode()
    assert re.search(rf"#{late.submission_id}.*?badge-overdue", page, re.S)


# --- escalation -------------------------------------------------------------------------------


@pytest.fixture
def escalating(publish_variant):
    return publish_variant("customer-reply", "escalating-reply", routing__escalation_group="support-leads",
                           routing__escalate_after_minutes={"blocking_review": 60})


@pytest.fixture
def leads(make_user):
    lead = make_user("lead", "reviewer", "support-leads")
    # In the group but without the reviewer role: may not review anything, so gets no e-mail.
    bystander = make_user("lead-no-role", "support-leads")
    for user in (lead, bystander):
        user.email = f"{user.username}@example.org"
        user.save()
    return lead, bystander


def test_publishing_an_escalation_group_creates_it(escalating):
    assert Group.objects.filter(name="support-leads").exists()
    assert escalating.spec.routing.escalate_after_minutes == {"blocking_review": 60}


def test_a_review_past_the_second_limit_escalates_to_the_group_and_only_that_review(
        demo, reviewers, escalating, leads, customer_reply_input):
    lead, bystander = leads
    old = blocking(demo, customer_reply_input, version=escalating)
    young = blocking(demo, customer_reply_input, version=escalating)
    other_workflow = blocking(demo, customer_reply_input)  # customer-reply: no escalation configured
    hour_ago = timezone.now() - timedelta(minutes=61)
    ReviewTask.objects.filter(pk__in=[old.pk, other_workflow.pk]).update(created_at=hour_ago, announced_at=hour_ago)
    client = Client()
    client.force_login(lead)
    # Before: nothing of this workflow is the lead's.
    assert client.get(f"/review/{old.pk}/").status_code == 404
    assert client.post(f"/review/{old.pk}/claim/").status_code == 404

    outcome = tasks.check_review_sla()
    assert outcome["escalated"] == 1
    assert tasks.check_review_sla()["escalated"] == 0  # once

    old.refresh_from_db()
    assert old.escalated_at is not None and old.escalated_to.name == "support-leads"
    assert ReviewTask.objects.filter(escalated_at__isnull=False).count() == 1
    (event,) = AuditEvent.objects.filter(action="review.escalated")
    assert event.object_id == str(old.pk)
    assert event.payload["group"] == "support-leads" and event.payload["after_minutes"] == 60
    assert event.workflow_version_id == escalating.pk
    (message,) = mails_to(lead)
    assert message.subject == "[ReviewDesk] 1 review escalated to support-leads"
    assert links(message)[0] == f"/review/{old.pk}/"
    assert mails_to(bystander) == []

    # After: the escalated review and nothing else.
    assert client.get(f"/review/{old.pk}/").status_code == 200
    assert client.get(f"/review/{young.pk}/").status_code == 404
    assert client.get(f"/review/{other_workflow.pk}/").status_code == 404
    queue = client.get("/review/").content.decode()
    assert f"/review/{old.pk}/" in queue and "badge-escalated" in queue
    assert f"/review/{young.pk}/" not in queue and f"/review/{other_workflow.pk}/" not in queue
    assert client.get(f"/submissions/{old.submission_id}/").status_code == 200
    assert client.get(f"/submissions/{young.submission_id}/").status_code == 404
    # The lead decides it.
    assert client.post(f"/review/{old.pk}/claim/").status_code == 302
    assert client.post(f"/review/{old.pk}/approve/", {}).status_code == 302
    old.refresh_from_db()
    assert old.decision == "approve" and old.decided_by == lead
    # In the group without the reviewer role: the review pages stay closed.
    outsider = Client()
    outsider.force_login(bystander)
    assert outsider.get(f"/review/{old.pk}/").status_code == 404


def test_escalations_of_two_workflows_to_one_group_make_one_message(
        demo, escalating, publish_variant, leads, customer_reply_input):
    lead, _ = leads
    second = publish_variant("customer-reply", "escalating-reply-two", routing__escalation_group="support-leads",
                             routing__escalate_after_minutes={"blocking_review": 45})
    first_task = blocking(demo, customer_reply_input, version=escalating)
    second_task = blocking(demo, customer_reply_input, version=second)
    ReviewTask.objects.update(created_at=timezone.now() - timedelta(minutes=90))

    assert tasks.check_review_sla()["escalated"] == 2
    (message,) = mails_to(lead)
    assert message.subject == "[ReviewDesk] 2 reviews escalated to support-leads"
    assert sorted(links(message)[:2]) == sorted(f"/review/{t.pk}/" for t in (first_task, second_task))
    minutes = dict(AuditEvent.objects.filter(action="review.escalated").values_list("object_id", "payload__after_minutes"))
    assert minutes == {str(first_task.pk): 60, str(second_task.pk): 45}


def test_a_long_list_names_fifty_and_counts_the_rest(demo, reviewers, customer_reply_input, monkeypatch):
    monkeypatch.setattr(notifications, "LISTED", 2)
    made = [blocking(demo, customer_reply_input) for _ in range(3)]
    tasks.send_review_digests()
    (message,) = mails_to(reviewers["second"])
    assert message.subject == "[ReviewDesk] 3 reviews waiting for you"
    assert [p for p in links(message) if p.startswith("/review/") and p != "/review/"] == \
        [f"/review/{t.pk}/" for t in made[:2]]
    assert "... and 1 more. The whole queue: https://reviewdesk.example.org/review/" in message.body


def test_the_service_refuses_an_escalation_lead_before_escalation(demo, escalating, leads, customer_reply_input):
    lead, _ = leads
    task = blocking(demo, customer_reply_input, version=escalating)
    with pytest.raises(DomainError, match="not a reviewer"):
        _claim(task, lead)


# --- submitters: decisions and retractions --------------------------------------------------


def _login_through_the_link(path: str, username: str, password: str) -> str:
    """Open an e-mail's link signed out: the log-in page, then the item (login's ?next=)."""
    client = Client()
    response = client.get(path)
    assert response.status_code == 302 and response["Location"] == f"/accounts/login/?next={quote(path)}"
    response = client.post(response["Location"], {"username": username, "password": password})
    assert response.status_code == 302 and response["Location"] == path
    page = client.get(path)
    assert page.status_code == 200
    return page.content.decode()


@pytest.fixture
def submitter(make_user):
    user = make_user("asker", "submitter")
    user.email = "asker@example.org"
    user.save()
    return user


def _only_notification():
    (notification,) = Notification.objects.filter(kind__in=[NotificationKind.DECISION, NotificationKind.RETRACTION])
    return notification


def test_an_approval_mails_the_submitter_a_link_that_opens_after_login(
        demo, reviewers, submitter, customer_reply_input, django_capture_on_commit_callbacks):
    task = blocking(demo, customer_reply_input, user=submitter)
    _claim(task, reviewers["reviewer"])
    with django_capture_on_commit_callbacks(execute=True):
        services.review_approve(task_id=task.pk, user=reviewers["reviewer"])
    notification = _only_notification()
    assert (notification.kind, notification.recipient, notification.state) == ("decision", submitter, "pending")

    assert notifications.deliver(notification.pk) == "sent"
    assert notifications.deliver(notification.pk) == "not due"  # twice: sent once
    assert tasks.deliver_notification(notification.pk) == "not due"
    (message,) = mails_to(submitter)
    assert message.subject == f"[ReviewDesk] Your request #{task.submission_id} was approved"
    assert "ready for you to use" in message.body
    # Plain words: no audit codes, hashes, scores or thresholds.
    assert not re.search(r"review\.|[0-9a-f]{64}|score|auto_approve", message.body)
    path = links(message)[0]
    assert path == f"/submissions/{task.submission_id}/"
    page = _login_through_the_link(path, "asker", "pw-asker")
    assert f"#{task.submission_id}" in page


def test_an_edited_approval_says_a_reviewer_changed_it(demo, reviewers, submitter, customer_reply_input,
                                                        django_capture_on_commit_callbacks):
    task = blocking(demo, customer_reply_input, user=submitter)
    _claim(task, reviewers["reviewer"])
    edited = '{"reply": "Dear Ann, we are very sorry.", "tone": "apologetic"}'
    with django_capture_on_commit_callbacks(execute=True):
        services.review_approve(task_id=task.pk, user=reviewers["reviewer"], edited_output=edited)
    notifications.deliver(_only_notification().pk)
    (message,) = mails_to(submitter)
    assert "after a reviewer made some changes" in message.body


def test_a_rejection_mails_the_reason_in_plain_words(demo, reviewers, submitter, customer_reply_input,
                                                     django_capture_on_commit_callbacks):
    task = blocking(demo, customer_reply_input, user=submitter)
    _claim(task, reviewers["reviewer"])
    with django_capture_on_commit_callbacks(execute=True):
        services.review_reject(task_id=task.pk, user=reviewers["reviewer"], reason_code="tone",
                               reason_text="Too casual for a complaint from Ann Example.")
    notifications.deliver(_only_notification().pk)
    (message,) = mails_to(submitter)
    assert message.subject == f"[ReviewDesk] Your request #{task.submission_id} was not approved"
    assert "Reason: Wrong tone" in message.body
    # The submitter's page does not show the reviewer's own words, so neither does the e-mail.
    assert "Too casual" not in message.body and "tone" not in message.body.replace("Wrong tone", "")
    assert "withdrawn" not in message.body  # nothing had been released
    page = _login_through_the_link(links(message)[0], "asker", "pw-asker")
    assert "Wrong tone" in page or "Rejected" in page


def test_rejecting_a_released_draft_sends_one_message_that_says_not_to_use_it(
        demo, reviewers, submitter, customer_reply_input, django_capture_on_commit_callbacks):
    task = drafted(submit(demo, customer_reply_input, user=submitter), lane="async").review_tasks.get()
    _claim(task, reviewers["reviewer"])
    with django_capture_on_commit_callbacks(execute=True) as hooks:
        services.review_reject(task_id=task.pk, user=reviewers["reviewer"], reason_code="inaccurate", reason_text="x")
    assert len(app_hooks(hooks)) == 2  # the retraction's and the decision's
    notifications.deliver_due()
    (message,) = mails_to(submitter)
    assert "not approved" in message.subject
    assert "has been withdrawn: do not use it" in message.body


def test_a_retraction_by_sending_back_tells_the_submitter_not_to_use_the_text(
        demo, reviewers, submitter, customer_reply_input, django_capture_on_commit_callbacks):
    task = drafted(submit(demo, customer_reply_input, user=submitter), lane="async").review_tasks.get()
    _claim(task, reviewers["reviewer"])
    with django_capture_on_commit_callbacks(execute=True):
        services.review_regenerate(task_id=task.pk, user=reviewers["reviewer"], feedback="Mention the refund.")
    notification = _only_notification()
    assert notification.kind == "retraction"
    assert notifications.deliver(notification.pk) == "sent"
    (message,) = mails_to(submitter)
    assert message.subject == f"[ReviewDesk] Do not use the text released for your request #{task.submission_id}"
    assert "Do not use it" in message.body and "Mention the refund" not in message.body
    page = _login_through_the_link(links(message)[0], "asker", "pw-asker")
    assert f"#{task.submission_id}" in page


def test_the_audit_sample_confirmed_unchanged_is_no_news_but_its_retraction_is(
        demo, reviewers, submitter, publish_variant, customer_reply_input, django_capture_on_commit_callbacks):
    version = publish_variant("customer-reply", "customer-reply-sampled", routing__audit_sample_rate=1.0)

    def sampled():
        submission = services.submission_create(version=version, user=submitter, data=customer_reply_input)
        task = drafted(submission, lane="auto").review_tasks.get()
        assert task.sampled and task.submission.is_released
        _claim(task, reviewers["reviewer"])
        return task

    confirmed, retracted = sampled(), sampled()
    with django_capture_on_commit_callbacks(execute=True):
        services.review_approve(task_id=confirmed.pk, user=reviewers["reviewer"])
        services.review_reject(task_id=retracted.pk, user=reviewers["reviewer"], reason_code="inaccurate",
                               reason_text="Wrong refund amount.")
    assert notifications.deliver_due() == {"sent": 1}
    (message,) = mails_to(submitter)
    assert f"request #{retracted.submission_id}" in message.subject
    assert "has been withdrawn: do not use it" in message.body
    assert "Reason: Inaccurate or wrong facts" in message.body


def test_the_first_of_two_approvals_tells_the_submitter_nothing_yet(demo, reviewers, submitter, customer_reply_input):
    # A decision that leaves the request unsettled (the queue issue's two approvals) is no news.
    task = blocking(demo, customer_reply_input, user=submitter)
    ReviewTask.objects.filter(pk=task.pk).update(state="done", decision="approve")
    assert task.submission.state == SubmissionState.ROUTED
    notifications.decision_made(task.pk)
    assert Notification.objects.count() == 0


def test_a_submitter_who_turned_decisions_off_gets_no_mail(demo, reviewers, submitter, customer_reply_input,
                                                          django_capture_on_commit_callbacks):
    notifications.preferences_set(user=submitter, choices={"decision": False, "retraction": True})
    task = blocking(demo, customer_reply_input, user=submitter)
    _claim(task, reviewers["reviewer"])
    with django_capture_on_commit_callbacks(execute=True):
        services.review_approve(task_id=task.pk, user=reviewers["reviewer"])
    assert Notification.objects.count() == 0
    notifications.deliver_due()
    assert mail.outbox == []


def test_a_preference_turned_off_after_queueing_still_stops_the_mail(demo, reviewers, customer_reply_input):
    blocking(demo, customer_reply_input)
    ids = notifications.queue_new_work_digests()
    notifications.preferences_set(user=reviewers["second"], choices={"new_work": False})
    outcomes = notifications.deliver_many(ids)
    assert outcomes == {"sent": 1, "skipped": 1}
    assert mails_to(reviewers["second"]) == []


# --- a failing mail server ------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_failing_mail_server_loses_neither_the_decision_nor_the_mail(
        demo, reviewers, submitter, customer_reply_input, settings, caplog, django_capture_on_commit_callbacks):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", _closed_port(), 2
    settings.REVIEWDESK_MAIL_MAX_ATTEMPTS = 3
    task = blocking(demo, customer_reply_input, user=submitter)
    _claim(task, reviewers["reviewer"])
    with django_capture_on_commit_callbacks(execute=True):
        services.review_approve(task_id=task.pk, user=reviewers["reviewer"])
    notification = _only_notification()

    assert notifications.deliver(notification.pk) == "retry"
    task.refresh_from_db()
    assert task.state == "done" and task.submission.state == SubmissionState.APPROVED  # the decision stands
    notification.refresh_from_db()
    assert (notification.state, notification.attempts) == ("pending", 1)
    assert "ConnectionRefusedError" in notification.last_error
    assert timedelta(seconds=50) < notification.next_attempt_at - timezone.now() <= timedelta(minutes=1)
    assert "failed, try 1; next in 0:01:00" in caplog.text
    assert notifications.deliver(notification.pk) == "not due"  # waits its turn
    assert notifications.deliver_due() == {}

    # The wait doubles.
    Notification.objects.filter(pk=notification.pk).update(next_attempt_at=timezone.now())
    assert notifications.deliver_due() == {"retry": 1}
    notification.refresh_from_db()
    assert timedelta(seconds=110) < notification.next_attempt_at - timezone.now() <= timedelta(minutes=2)

    # The server is back: the periodic delivery sends it.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    Notification.objects.filter(pk=notification.pk).update(next_attempt_at=timezone.now())
    assert tasks.deliver_notifications() == {"sent": 1}
    notification.refresh_from_db()
    assert (notification.state, notification.attempts, notification.last_error) == ("sent", 3, "")
    assert len(mails_to(submitter)) == 1


def test_a_mail_that_keeps_failing_is_given_up_and_logged(demo, reviewers, customer_reply_input, settings, caplog):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", _closed_port(), 2
    settings.REVIEWDESK_MAIL_MAX_ATTEMPTS = 2
    blocking(demo, customer_reply_input)
    ids = notifications.queue_new_work_digests()
    assert notifications.deliver_many(ids) == {"retry": 2}
    Notification.objects.update(next_attempt_at=timezone.now())
    assert notifications.deliver_due() == {"failed": 2}
    assert set(Notification.objects.values_list("state", flat=True)) == {NotificationState.FAILED}
    assert "given up after 2 tries" in caplog.text


# --- the preferences page -------------------------------------------------------------------


def test_the_preferences_page_offers_what_each_role_can_receive(demo, reviewers, submitter):
    def page(user):
        client = Client()
        client.force_login(user)
        response = client.get("/account/notifications/")
        assert response.status_code == 200
        return response.content.decode()

    reviewer_page = page(reviewers["second"])
    assert 'name="new_work"' in reviewer_page and 'name="escalation"' in reviewer_page
    assert 'name="decision"' not in reviewer_page
    assert "checked" in reviewer_page  # defaults on
    submitter_page = page(submitter)
    assert 'name="decision"' in submitter_page and 'name="retraction"' in submitter_page
    assert 'name="new_work"' not in submitter_page
    assert 'id="no-notifications"' in page(demo.users["compliance"])
    assert 'href="/account/notifications/"' in submitter_page  # in the navigation


def test_preferences_are_only_ever_ones_own(demo, reviewers, submitter):
    victim = reviewers["second"]
    client = Client()
    client.force_login(submitter)
    # A user id in the body or the path changes nothing of anyone else's.
    assert client.post("/account/notifications/", {"user": victim.pk, "user_id": victim.pk}).status_code == 302
    assert not NotificationPreference.objects.filter(user=victim).exists()
    mine = NotificationPreference.objects.get(user=submitter)
    assert (mine.decision, mine.retraction) == (False, False)
    # Kinds the user's roles do not offer are left alone.
    assert mine.new_work is True
    assert client.get(f"/account/notifications/{victim.pk}/").status_code == 404
    assert client.post(f"/account/notifications/{victim.pk}/", {}).status_code == 404
    anonymous = Client().get("/account/notifications/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")


# --- the worker sends it, after the commit ------------------------------------------------


def test_the_worker_sends_the_submitters_mail_after_the_decision_commits(worker, demo, customer_reply_input):
    reviewer = demo.users["reviewer"]
    # Submitted and claimed in one transaction, so that the worker's generation task (sent on
    # commit) finds it claimed and the draft is the scripted one recorded here.
    with transaction.atomic():
        submission = submit(demo, customer_reply_input)
        claimed = services.generation_claim(submission_id=submission.pk)
    result = completion("blocking")
    services.draft_record(submission_id=submission.pk, attempt=claimed.attempts, result=result)
    task = ReviewTask.objects.get(submission=submission)
    services.review_claim(task_id=task.pk, user=reviewer)
    services.review_approve(task_id=task.pk, user=reviewer)  # commits: the hooks run for real

    notification = wait_for(lambda: Notification.objects.filter(kind="decision", state="sent").first(),
                            message="the worker to send the decision e-mail")
    assert notification.recipient == demo.users["submitter"] and notification.attempts == 1
    # The worker runs with the console backend (no EMAIL_HOST): the message is in its log.
    log = wait_for(lambda: (text := open(worker.log_path).read()) and
                   f"Subject: [ReviewDesk] Your request #{task.submission_id} was approved" in text and text,
                   message="the message in the worker's log")
    assert f"/submissions/{task.submission_id}/" in log


# --- hostile input to the preferences form ---------------------------------------------------

KIND_NAMES = [kind.value for kind in NotificationKind]


@FUZZ
@given(body=bodies(KIND_NAMES, extra=("user", "user_id", "recipient")), htmx=st.booleans())
def test_the_preferences_form_survives_hostile_input(body, htmx, demo, reviewers, submitter):
    client = Client()
    client.force_login(submitter)
    others = sorted(NotificationPreference.objects.exclude(user=submitter).values_list("user_id", *KIND_NAMES))
    with transaction.atomic():
        response = _post(client, "/account/notifications/", body, htmx)
        _assert_no_server_error(response, f"POST {body!r:.80}")
        assert response.status_code in (200, 302, 422)
        # Nobody else's choices move, whatever the body names; kinds a submitter is not offered stay on.
        assert sorted(NotificationPreference.objects.exclude(user=submitter).values_list("user_id", *KIND_NAMES)) == others
        mine = NotificationPreference.objects.filter(user=submitter).first()
        assert mine is None or (mine.new_work, mine.overdue, mine.escalation) == (True, True, True)
        transaction.set_rollback(True)
