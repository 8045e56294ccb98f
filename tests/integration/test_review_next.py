"""Next item: the most urgent free review, claimed atomically, never the same one twice."""
import threading

import pytest
from django.db import connection, connections
from django.utils import timezone

from tests.labelled import open_review_tasks
from workflows import services
from workflows.models import AuditEvent, Lane, ReviewTask


def test_next_takes_the_most_urgent_free_item_and_skips_a_held_one(demo):
    version = demo.version("customer-reply")
    first, second, third = open_review_tasks(version, demo.users["submitter"], 3)
    reviewer = demo.users["reviewer"]
    services.review_claim(task_id=first.pk, user=reviewer)  # the most urgent is held already

    taken = services.review_claim_next(user=reviewer, lane=Lane.BLOCKING_REVIEW)
    assert taken.pk == second.pk
    assert taken.claimed_by_id == reviewer.pk and taken.lease_expires_at > timezone.now()
    assert AuditEvent.objects.filter(object_type="reviewtask", object_id=str(second.pk), action="review.claimed").count() == 1
    assert services.review_claim_next(user=reviewer, lane=Lane.BLOCKING_REVIEW).pk == third.pk
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
    assert services.review_claim_next(user=demo.users["reviewer"]).pk == task.pk


def test_fifty_claimers_at_once_never_share_an_item(demo_committed_tasks):
    tasks, reviewers = demo_committed_tasks
    claimers, got, errors = 50, [], []
    start = threading.Barrier(claimers)

    def claim(n: int) -> None:
        try:
            start.wait()
            task = services.review_claim_next(user=reviewers[n % len(reviewers)])
            got.append(task.pk if task else None)
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
