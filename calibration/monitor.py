"""The quality monitor: the reviewed audit sample of auto-approved drafts estimates the live
escape rate of each workflow; when its upper bound passes the workflow's target, automation
pauses by itself (workflows.services.workflow_hold, kind "monitor") until a person resumes it.

Only the current version's sampled drafts decided since it was published and since the last
resume count (the person resuming has looked at the earlier evidence). Below `start_size`
decisions there is no evidence either way and the monitor waits: with fewer, even a perfect
record could not show the target is met, and pausing on it would pause every new workflow.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from workflows import services
from workflows.labels import MATERIAL
from workflows.models import ReviewState, ReviewTask, Workflow

from . import maths

log = logging.getLogger(__name__)

WINDOW = 1000  # the most recent sampled decisions weighed: drift shows instead of drowning


@dataclass(frozen=True)
class LiveEscape:
    sampled: int
    material: int
    upper: float
    needed: int
    since: datetime | None

    @property
    def enough(self) -> bool:
        return self.sampled >= self.needed


def live_escape(workflow: Workflow) -> LiveEscape | None:
    version = workflow.current_version
    if version is None:
        return None
    since = max(filter(None, [version.published_at, workflow.automation_resumed_at]))
    labels = list(
        ReviewTask.objects.filter(submission__workflow_version=version, sampled=True, state=ReviewState.DONE,
                                  decided_at__gte=since)
        .exclude(label="").order_by("-decided_at").values_list("label", flat=True)[:WINDOW]
    )
    material = sum(1 for label in labels if label in MATERIAL)
    return LiveEscape(sampled=len(labels), material=material, upper=maths.upper_bound(material, len(labels)),
                      needed=maths.start_size(workflow.target_escape_rate), since=since)


def check(workflow: Workflow) -> str:
    """Look at one workflow; pause it when the evidence says so. Returns what it did."""
    if workflow.automation_hold:
        return "held"
    estimate = live_escape(workflow)
    if estimate is None or not estimate.enough:
        return "waiting"
    if estimate.upper <= workflow.target_escape_rate:
        return "ok"
    reason = (f"{estimate.material} of the last {estimate.sampled} audit-sampled auto-approvals needed a material "
              f"change: the escape rate may be up to {estimate.upper:.1%} (95% confidence), over the target of "
              f"{workflow.target_escape_rate:.1%}.")
    services.workflow_hold(workflow_id=workflow.pk, kind="monitor", reason=reason,
                           evidence={"sampled": estimate.sampled, "material": estimate.material,
                                     "upper": round(estimate.upper, 6), "target": workflow.target_escape_rate})
    log.warning("quality monitor paused %s: %s", workflow.slug, reason)
    return "paused"


def check_all() -> dict[str, str]:
    return {w.slug: check(w) for w in Workflow.objects.filter(versions__isnull=False).distinct()}
