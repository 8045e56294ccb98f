"""Thin, idempotent Celery tasks: take ids, claim, call a service."""
from __future__ import annotations

import logging

from celery import shared_task
from kombu.exceptions import OperationalError as BrokerError

from . import selectors, services
from .generation import produce_completion
from .llm.types import EngineError
from .request_context import request_id_var

log = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, name="workflows.tasks.generate_draft")
def generate_draft(self, submission_id: int) -> None:
    request_id_var.set(f"task-{self.request.id}" if self.request.id else "")
    submission = services.generation_claim(submission_id=submission_id)
    if submission is None:
        log.info("submission %s: nothing to generate (already claimed or done)", submission_id)
        return
    attempt = submission.attempts
    try:
        completion = produce_completion(submission)
        services.draft_record(submission_id=submission_id, attempt=attempt, completion=completion)
    except EngineError as exc:
        services.generation_fail(
            submission_id=submission_id, attempt=attempt, reason=str(exc), failures=exc.failures
        )
    except Exception as exc:
        # Anything else (a soft time limit, an unexpected provider answer, a database error
        # while storing) must still end the attempt visibly: a submission left in
        # "generating" would show a spinner forever and never reach a reviewer.
        log.exception("submission %s attempt %s: generation failed", submission_id, attempt)
        services.generation_fail(
            submission_id=submission_id, attempt=attempt, reason=f"{type(exc).__name__}: {exc}"[:1000]
        )


def enqueue_generation(submission_id: int) -> None:
    """Send the generation task; called on commit.

    The submission is already saved when this runs, so a broker outage must not turn into an
    error page: the row stays "submitted" and the periodic sweep below sends it again.
    """
    try:
        generate_draft.delay(submission_id)
    except BrokerError:
        log.warning("broker unavailable; submission %s will be picked up by the sweep", submission_id)


@shared_task(name="workflows.tasks.requeue_stalled_generations")
def requeue_stalled_generations() -> int:
    """Re-send generation for submissions whose task was lost (broker down at commit, worker
    killed mid-call). Safe to run at any time: generate_draft claims before it works."""
    ids = selectors.stalled_generation_ids()
    for submission_id in ids:
        generate_draft.delay(submission_id)
    services.generation_requeued(submission_ids=ids)
    if ids:
        log.info("requeued generation for %d stalled submissions", len(ids))
    return len(ids)
