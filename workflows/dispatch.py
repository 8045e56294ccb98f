"""Sending tasks from services, by name.

Services enqueue work; tasks call services. Sending by name (instead of importing the task
function) keeps that one-way: ``workflows.tasks`` imports services, never the reverse.
"""
from __future__ import annotations

import logging

from celery import current_app
from kombu.exceptions import OperationalError as BrokerError

log = logging.getLogger(__name__)

GENERATE_DRAFT = "workflows.tasks.generate_draft"


def send_generation(submission_id: int) -> None:
    """Put one generation message on the broker (raises when the broker is down)."""
    current_app.send_task(GENERATE_DRAFT, args=[submission_id])


def enqueue_generation(submission_id: int) -> None:
    """Send the generation task; called on commit.

    The submission is already saved when this runs, so a broker outage must not turn into an
    error page: the row stays waiting and the periodic sweep sends it again.
    """
    try:
        send_generation(submission_id)
    except BrokerError:
        log.warning("broker unavailable; submission %s will be picked up by the sweep", submission_id)


RUN_AUDIT_EXPORT = "workflows.tasks.run_audit_export"


def enqueue_audit_export(job_id: int) -> None:
    """Send the export job's task on commit (default queue). A broker outage leaves the job
    queued; the page says so and the officer can ask again."""
    try:
        current_app.send_task(RUN_AUDIT_EXPORT, args=[job_id])
    except BrokerError:
        log.warning("broker unavailable; export job %s stays queued", job_id)
