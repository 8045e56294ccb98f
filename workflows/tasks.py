"""Thin, idempotent Celery tasks: take ids, claim, call a service."""
from __future__ import annotations

import logging

from celery import shared_task

from . import services
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
    except EngineError as exc:
        services.generation_fail(submission_id=submission_id, attempt=attempt, failures=exc.failures)
        return
    services.draft_record(submission_id=submission_id, attempt=attempt, completion=completion)
