"""Next item: the most urgent free review, claimed atomically, never the same one twice."""
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test import Client
from django.utils import timezone

from tests.labelled import open_review_tasks
from workflows import services
from workflows.auth_backends import _user_statement
from workflows.models import AuditEvent, Lane, ReviewTask


def test_next_takes_the_most_urgent_free_item_and_skips_a_held_one(demo):
    version = demo.version("customer-reply")
    first, second, third = open_review_tasks(version, demo.users["submitter"], 3)
    reviewer = demo.users["reviewer"]
    services.review_claim(task_id=first.pk, user=reviewer)  # the most urgent is held already

    taken = ReviewTask.objects.get(pk=services.review_claim_next(user=reviewer, lane=Lane.BLOCKING_REVIEW))
    assert taken.pk == second.pk
    assert taken.claimed_by_id == reviewer.pk and taken.lease_expires_at > timezone.now()
    assert AuditEvent.objects.filter(object_type="reviewtask", object_id=str(second.pk), action="review.claimed").count() == 1
    assert services.review_claim_next(user=reviewer, lane=Lane.BLOCKING_REVIEW) == third.pk
    assert services.review_claim_next(user=reviewer, lane=Lane.BLOCKING_REVIEW) is None
    assert services.review_claim_next(user=reviewer, lane=Lane.ASYNC_REVIEW) is None


def test_next_never_offers_own_submissions_or_other_workflows(demo, make_user):
    from workflows.roles import REVIEWER

    reviewer = make_user("support-only", REVIEWER, "support-reviewers")
    open_review_tasks(demo.version("customer-reply"), reviewer, 2)  # the reviewer's own submissions
    open_review_tasks(demo.version("underwriting-memo"), demo.users["submitter"], 2)  # not their group's
    assert services.review_claim_next(user=reviewer) is None


def test_an_expired_lease_is_offered_again(demo):
    (task,) = open_review_tasks(demo.version("customer-reply"), demo.users["submitter"], 1)
    ReviewTask.objects.filter(pk=task.pk).update(claimed_by=demo.users["reviewer"],
                                                  lease_expires_at=timezone.now() - timezone.timedelta(seconds=1))
    assert services.review_claim_next(user=demo.users["reviewer"]) == task.pk


def test_fifty_claimers_at_once_never_share_an_item(demo_committed_tasks):
    tasks, reviewers = demo_committed_tasks
    claimers, got, errors = 50, [], []
    start = threading.Barrier(claimers)

    def claim(n: int) -> None:
        try:
            start.wait()
            got.append(services.review_claim_next(user=reviewers[n % len(reviewers)]))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    claimed = [pk for pk in got if pk is not None]
    # 60 free items and 50 claimers: everyone gets one, and no item twice.
    assert len(claimed) == claimers
    assert len(set(claimed)) == claimers
    held = ReviewTask.objects.filter(pk__in=[t.pk for t in tasks], claimed_by__isnull=False).count()
    assert held == claimers


@pytest.mark.parametrize("async_commit", [True, False])
def test_next_outside_a_transaction_is_one_round_trip_whose_commit_skips_the_flush(demo_committed_tasks, settings,
                                                                                   async_commit):
    """The Next view calls it outside any transaction: the statement is its own transaction (no
    BEGIN, SET or COMMIT), and with REVIEWDESK_CLAIM_ASYNC_COMMIT its commit does not wait for
    the WAL flush; the setting is local to that statement's transaction, never the session's.
    (The first claim on a connection also sends the statement to be prepared: a second round
    trip, once per connection.)"""
    from django.test.utils import CaptureQueriesContext

    from workflows.roles import group_names

    settings.REVIEWDESK_CLAIM_ASYNC_COMMIT = async_commit
    tasks, (reviewer, *_) = demo_committed_tasks
    group_names(reviewer)  # read once per request, by the view's role check
    assert not connection.in_atomic_block
    with CaptureQueriesContext(connection) as ctx:
        taken = services.review_claim_next(user=reviewer)
    assert taken == tasks[0].pk
    (claim,) = [q["sql"] for q in ctx.captured_queries]
    assert claim.lstrip().startswith("WITH pick AS")
    mode = "'off'" if async_commit else "NULL"
    assert f"set_config('synchronous_commit', COALESCE({mode}, current_setting('synchronous_commit')), true)" in claim
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"
    # Committed with the statement (no transaction is open): the lease, the history row, the event.
    assert ReviewTask.objects.get(pk=taken).claimed_by_id == reviewer.pk
    assert ReviewTask.history.filter(id=taken, history_change_reason="claimed").count() == 1
    assert AuditEvent.objects.filter(object_id=str(taken), action="review.claimed").count() == 1


def test_a_claim_by_hand_skips_the_flush_only_in_its_own_transaction(demo_committed_tasks, settings):
    from django.db import transaction
    from django.test.utils import CaptureQueriesContext

    tasks, (reviewer, *_) = demo_committed_tasks
    settings.REVIEWDESK_CLAIM_ASYNC_COMMIT = False
    with CaptureQueriesContext(connection) as ctx:
        services.review_claim(task_id=tasks[0].pk, user=reviewer)
    assert not [q for q in ctx.captured_queries if "synchronous_commit" in q["sql"]]
    settings.REVIEWDESK_CLAIM_ASYNC_COMMIT = True
    services.review_release(task_id=tasks[0].pk, user=reviewer)
    with CaptureQueriesContext(connection) as ctx:
        services.review_claim(task_id=tasks[0].pk, user=reviewer)
    assert [q["sql"] for q in ctx.captured_queries].count("SET LOCAL synchronous_commit TO OFF") == 1
    # Inside a caller's transaction the setting would outlive the claim: left alone.
    with CaptureQueriesContext(connection) as ctx, transaction.atomic():
        services.review_claim(task_id=tasks[1].pk, user=reviewer)
    assert not [q for q in ctx.captured_queries if "synchronous_commit" in q["sql"]]


@pytest.fixture
def demo_committed_tasks(transactional_db, django_db_blocker):
    from tests.conftest import _demo_present, _seed_demo

    if not _demo_present():
        _seed_demo()
    from django.contrib.auth import get_user_model

    from workflows.models import Workflow

    users = get_user_model().objects
    version = Workflow.objects.get(slug="customer-reply").versions.order_by("-number").first()
    tasks = open_review_tasks(version, users.get(username="submitter"), 60)
    reviewers = [users.get(username="reviewer")]
    yield tasks, reviewers
    connections.close_all()
    if getattr(connection, "pool", None) is not None:
        connection.close_pool()


def test_next_takes_exactly_the_pages_first_free_row_on_a_mixed_queue(demo, make_user):
    """Next's one statement repeats the queue's scope and order in SQL (services.reviews): on a
    queue with every kind of row, pressing Next takes the row the page shows first among those
    free for this reviewer, tab by tab, until nothing is left."""
    import random

    from django.contrib.auth.models import Group

    from workflows import selectors
    from workflows.models import ReviewApproval
    from workflows.roles import REVIEWER

    rng = random.Random(8)
    reviewer = make_user("mixed-reviewer", REVIEWER, "support-reviewers", "escalation-desk")
    other = demo.users["reviewer"]
    now = timezone.now()
    mine = open_review_tasks(demo.version("customer-reply"), demo.users["submitter"], 40)
    own = open_review_tasks(demo.version("customer-reply"), reviewer, 3)          # never offered
    foreign = open_review_tasks(demo.version("underwriting-memo"), demo.users["submitter"], 8)
    for task in mine + own + foreign:
        task.lane = rng.choice([Lane.BLOCKING_REVIEW, Lane.ASYNC_REVIEW])
        task.sampled = task.lane == Lane.ASYNC_REVIEW and rng.random() < 0.3
        # Equal due times (ties broken by priority, then id), none, and overdue ones.
        task.due_at = rng.choice([None, now - timedelta(minutes=5), now + timedelta(minutes=10),
                                  now + timedelta(minutes=rng.randint(1, 600))])
        task.priority = rng.choice([-1, 0, 0, 1, 2])
        lease = rng.random()
        if lease < 0.15:    # held by someone else: skipped
            task.claimed_by, task.lease_expires_at = other, now + timedelta(minutes=20)
        elif lease < 0.25:  # a lease that ran out: offered again
            task.claimed_by, task.lease_expires_at = other, now - timedelta(seconds=1)
    desk = Group.objects.get(name="escalation-desk")
    for task in foreign[:4]:  # escalated to the reviewer's group: theirs too, the rest not
        task.escalated_at, task.escalated_to = now, desk
    foreign[4].escalated_to = desk  # a group named but not escalated (yet): not theirs
    ReviewTask.objects.bulk_update(mine + own + foreign, ["lane", "sampled", "due_at", "priority", "claimed_by",
                                                          "lease_expires_at", "escalated_at", "escalated_to"])
    # Two approvals: the reviewer gave the first on two tasks (never offered to them again); a
    # superseded approval does not count.
    for task, superseded in ((mine[0], False), (mine[1], False), (mine[2], True)):
        ReviewApproval.objects.create(task=task, reviewer=reviewer, superseded=superseded, output_hash="0" * 64)

    def first_free(tab):
        rows = (selectors.queue_tasks(reviewer, selectors.QueueFilters(tab=tab)) if tab
                else selectors.queue_scope(reviewer).order_by(*selectors.QUEUE_ORDER))
        approved = selectors.queue_approved_by(reviewer, [t.pk for t in rows])
        now = timezone.now()
        return next((t.pk for t in rows if t.pk not in approved
                     and (t.lease_expires_at is None or t.lease_expires_at <= now)), None)

    taken = []
    for tab in [*selectors.QUEUE_TABS, None]:
        while (expected := first_free(tab)) is not None:
            assert services.review_claim_next(user=reviewer, lane=tab) == expected, tab
            taken.append(expected)
        assert services.review_claim_next(user=reviewer, lane=tab) is None
    escalated = {t.pk for t in foreign[:4] if ReviewTask.objects.get(pk=t.pk).claimed_by_id == reviewer.pk}
    # Something of every kind was taken, and nothing outside the reviewer's scope.
    assert len(taken) == len(set(taken)) >= 25 and escalated
    assert not {t.pk for t in own + foreign[4:]} & set(taken)
    assert not {mine[0].pk, mine[1].pk} & set(taken)


def test_a_web_requests_chain_message_goes_after_its_response(demo_committed_tasks, client, monkeypatch):
    """The audit chainer's broker message for a commit in a web request is sent once the response
    is out (request_finished), never while the reviewer waits; outside a request (a task, a
    command) at the commit, as before. Either way exactly one message, none left for beat."""
    from django.core.signals import request_finished

    from workflows import audit
    from workflows.request_context import in_web_request_var, request_id_var

    _, reviewers = demo_committed_tasks
    client.force_login(reviewers[0])  # its event's send is due now or armed on a timer
    if (armed := audit._trigger_timer) is not None:
        armed.cancel()
        armed.join()  # finished before the send is replaced below, whether it had started or not
        # Cleared for good, not monkeypatched: restoring the dead timer after the test would
        # leave every later commit in this process thinking a send is already due.
        with audit._trigger_lock:
            if audit._trigger_timer is armed:
                audit._trigger_timer = None
    sent, steps = [], []
    monkeypatch.setattr(audit, "_send_chain_task",
                        lambda: sent.append((in_web_request_var.get(), request_id_var.get(), list(steps))))
    monkeypatch.setattr(audit, "_trigger_last", 0.0)  # no throttle left over from the login's event
    # Connected after audit's receiver: it records the response as finished once the send is done.
    request_finished.connect(lambda **kw: steps.append("finished"), weak=False, dispatch_uid="test-steps")
    try:
        response = client.post("/review/next/")
        steps.append("returned")
    finally:
        request_finished.disconnect(dispatch_uid="test-steps")
    assert response.status_code == 302 and response["Location"].rstrip("/").split("/")[-1].isdigit()
    # One send, after the view and its middleware (no request id any more), in request_finished.
    assert sent == [(False, "", [])] and steps == ["finished", "returned"]

    sent.clear()
    monkeypatch.setattr(audit, "_trigger_last", 0.0)
    assert services.review_claim_next(user=reviewers[0]) is not None  # no request: at the commit
    assert sent == [(False, "", ["finished", "returned"])]


def test_the_claim_runs_prepared_from_a_generic_plan(demo_committed_tasks):
    """Next's statement is prepared once per connection and, after PostgreSQL's five custom
    plans, run from its generic plan (no planning per claim). If the statement stops being
    plannable without its parameters' values (the open state as a parameter hides the partial
    indexes; an estimate gone wrong makes the generic plan look dearer), PostgreSQL keeps
    planning every claim and this fails. Other statements on the connection stay unprepared,
    but for the session's user (auth_backends)."""
    tasks, reviewers = demo_committed_tasks
    with connection.cursor() as cursor:
        # Fresh statistics first, so that autovacuum's ANALYZE of the new rows cannot re-plan
        # midway; counted as differences, whatever this connection prepared before.
        cursor.execute("ANALYZE workflows_reviewtask, workflows_submission, workflows_reviewapproval")

    def plans():
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement LIKE %s, generic_plans, custom_plans FROM pg_prepared_statements "
                           "WHERE statement LIKE %s", ["%%t.lane = $%%", "%%WITH pick AS%%"])
            return {tab: (generic, custom) for tab, generic, custom in cursor.fetchall()}

    before = plans()
    browser = Client()
    browser.force_login(reviewers[0])
    assert browser.get("/").status_code == 200  # the session's user: the other prepared statement
    claimed = [services.review_claim_next(user=reviewers[0], lane=Lane.BLOCKING_REVIEW) for _ in range(8)]
    claimed += [services.review_claim_next(user=reviewers[0]) for _ in range(8)]
    assert None not in claimed and len(set(claimed)) == 16
    after = plans()
    # Both shapes (any lane, one tab) prepared on this connection, each planned at most five
    # times in all and run from the generic plan from then on.
    assert set(after) == {False, True}
    for shape, (generic, custom) in after.items():
        old_generic, old_custom = before.get(shape, (0, 0))
        assert custom <= 5 and generic - old_generic >= 8 - (5 - old_custom), (before, after)
    # Nothing else is prepared but the other statement prepared on purpose, the session's user
    # (auth_backends, read by the page above): the threshold set for
    # the claim's execution does not leak to the connection's other statements.
    user_sql = _user_statement()[0].replace("%s", "$1")
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE statement NOT LIKE %s", ["%%WITH pick AS%%"])
        assert [row[0] for row in cursor.fetchall()] == [user_sql]
