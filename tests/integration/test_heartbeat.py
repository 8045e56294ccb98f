"""Claims carry a heartbeat: a live worker's claim is never taken over however long its model
call takes, a claim whose heartbeat stopped is, exactly once, and the presumed-dead worker can
neither revive its claim nor store its late result."""
from __future__ import annotations

import threading
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from tests.integration.conftest import completion, submit
from workflows import dispatch, heartbeat, services, tasks
from workflows.models import AuditEvent, Draft, LLMCall, Submission, SubmissionState


def _stop_heartbeat(pk, *, seconds):
    """Make the claim's last beat ``seconds`` old on the database's clock."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE workflows_submission SET claim_heartbeat_at = now() - make_interval(secs => %s) "
                       "WHERE id = %s", [seconds, pk])


def test_a_beating_claim_is_left_alone_however_old_and_a_silent_one_is_swept(
    demo, customer_reply_input, settings, monkeypatch
):
    submission = submit(demo, customer_reply_input)
    claimed = services.generation_claim(submission_id=submission.pk)
    assert Submission.objects.get(pk=submission.pk).claim_heartbeat_at is not None
    sent = []
    monkeypatch.setattr(dispatch, "send_generation", sent.append)
    # A long model call: started minutes ago, but it beats.
    Submission.objects.filter(pk=submission.pk).update(generation_started_at=timezone.now() - timedelta(minutes=4))
    _stop_heartbeat(submission.pk, seconds=settings.REVIEWDESK_HEARTBEAT_SECONDS)
    assert tasks.requeue_stalled_generations.run() == 0 and sent == []
    assert services.generation_claim(submission_id=submission.pk) is None
    # Its worker died: no beat for longer than the stale limit.
    _stop_heartbeat(submission.pk, seconds=settings.REVIEWDESK_HEARTBEAT_STALE_SECONDS + 1)
    assert tasks.requeue_stalled_generations.run() == 1 and sent == [submission.pk]
    retaken = services.generation_claim(submission_id=submission.pk)
    assert retaken.attempts == claimed.attempts + 1
    started = AuditEvent.objects.filter(action="draft.generation_started", object_id=str(submission.pk))
    assert [(e.payload["attempt"], e.payload["retaken_stale_claim"]) for e in started.order_by("id")] == [
        (1, False), (2, True)]
    # The new claim beats afresh: the next sweep leaves it alone.
    assert tasks.requeue_stalled_generations.run() == 0


def test_the_presumed_dead_worker_cannot_revive_its_claim_nor_store_its_result(demo, customer_reply_input, settings):
    submission = submit(demo, customer_reply_input)
    services.generation_claim(submission_id=submission.pk)
    _stop_heartbeat(submission.pk, seconds=settings.REVIEWDESK_HEARTBEAT_STALE_SECONDS + 1)
    services.generation_claim(submission_id=submission.pk)  # attempt 2
    _stop_heartbeat(submission.pk, seconds=10)
    before = Submission.objects.get(pk=submission.pk).claim_heartbeat_at
    assert heartbeat.beat([(submission.pk, 1)]) == 0  # the old attempt's beat touches nothing
    assert Submission.objects.get(pk=submission.pk).claim_heartbeat_at == before
    assert services.draft_record(submission_id=submission.pk, attempt=1, result=completion("async")) is None
    services.generation_fail(submission_id=submission.pk, attempt=1, kind="internal", reason="late")
    current = Submission.objects.get(pk=submission.pk)
    assert current.state == SubmissionState.GENERATING and current.attempts == 2
    assert not Draft.objects.filter(submission=submission).exists()
    assert not LLMCall.objects.filter(submission=submission).exists()
    assert heartbeat.beat([(submission.pk, 2)]) == 1
    assert Submission.objects.get(pk=submission.pk).claim_heartbeat_at > before
    draft = services.draft_record(submission_id=submission.pk, attempt=2, result=completion("async"))
    assert draft is not None and draft.attempt == 2
    assert heartbeat.beat([(submission.pk, 2)]) == 0  # a finished claim does not beat


def test_of_two_tasks_racing_for_one_stale_claim_exactly_one_wins(transactional_db, demo, customer_reply_input,
                                                                   settings, monkeypatch):
    # Committed for real, so keep its task from the session's worker (if one is running).
    monkeypatch.setattr(dispatch, "send_generation", lambda pk: None)
    submission = submit(demo, customer_reply_input)
    services.generation_claim(submission_id=submission.pk)
    _stop_heartbeat(submission.pk, seconds=settings.REVIEWDESK_HEARTBEAT_STALE_SECONDS + 1)
    results, barrier = [], threading.Barrier(4)

    def claim():
        try:
            barrier.wait()
            results.append(services.generation_claim(submission_id=submission.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [r for r in results if r is not None]
    assert len(results) == 4 and len(winners) == 1 and winners[0].attempts == 2
    assert Submission.objects.get(pk=submission.pk).attempts == 2
