"""Thin periodic task of the costs app: resume, warn, alert. Safe to run twice at once (each
step locks its rows with SKIP LOCKED and checks again)."""
from __future__ import annotations

import logging

from celery import shared_task

from . import alerts, services

log = logging.getLogger(__name__)


@shared_task(name="costs.tasks.evaluate_costs")
def evaluate_costs() -> dict:
    resumed = services.resume_paused()
    warned = services.budget_warnings()
    alerted = alerts.evaluate_all()
    if resumed or warned or alerted:
        log.info("costs: %d paused submissions resumed, %d budget warnings, %d alerts sent", resumed, warned, alerted)
    return {"resumed": resumed, "warned": warned, "alerted": alerted}
