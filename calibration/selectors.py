"""Reads for calibration, scoped to the user asking (workflow admins and compliance)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from workflows.denials import get_in_scope
from workflows.labels import MATERIAL, Label
from workflows.models import Draft, Lane, ReviewState, ReviewTask, Workflow, WorkflowVersion
from workflows.roles import COMPLIANCE, WORKFLOW_ADMIN, has_role


def workflows_for_calibration(user):
    if not (has_role(user, WORKFLOW_ADMIN) or has_role(user, COMPLIANCE)):
        return Workflow.objects.none()
    return Workflow.objects.filter(versions__isnull=False).distinct().order_by("name")


def workflow_for_calibration(user, slug: str) -> Workflow:
    return get_in_scope(workflows_for_calibration(user), slug=slug)


@dataclass
class LabelledDrafts:
    """One entry per labelled draft of a version: its score, whether it needed a material
    change, and its weight (1 for a held draft, every one of which is reviewed; 1/rate for an
    auto-approval drawn for the audit sample, which stands for the ones nobody looked at)."""
    scores: np.ndarray
    bad: np.ndarray
    weights: np.ndarray
    by_label: dict[str, int] = field(default_factory=dict)
    sampled: int = 0

    @property
    def count(self) -> int:
        return int(self.scores.size)


def labelled_drafts(version: WorkflowVersion) -> LabelledDrafts:
    rate = version.spec.routing.audit_sample_rate
    rows = list(
        ReviewTask.objects.filter(submission__workflow_version=version, state=ReviewState.DONE)
        .exclude(label="")
        .values_list("draft__score", "label", "sampled")
    )
    scores = np.array([min(max(score, 0.0), 1.0) for score, _, _ in rows], dtype=float)
    bad = np.array([label in MATERIAL for _, label, _ in rows], dtype=bool)
    weights = np.array([1 / rate if sampled and rate > 0 else 1.0 for _, _, sampled in rows], dtype=float)
    by_label = {label.value: 0 for label in Label}
    for _, label, _ in rows:
        by_label[label] = by_label.get(label, 0) + 1
    return LabelledDrafts(scores, bad, weights, by_label, sampled=sum(1 for *_, s in rows if s))


def lane_mix(workflow: Workflow, *, days: int = 30) -> list[dict]:
    """Drafts per day and lane over the last `days` days, oldest first: [{day, auto_approve, ...}]."""
    since = timezone.now() - timedelta(days=days)
    rows = (Draft.objects.filter(submission__workflow_version__workflow=workflow, created_at__gte=since)
            .annotate(day=TruncDate("created_at")).values("day", "lane").annotate(n=Count("id")).order_by("day"))
    by_day: dict = {}
    for row in rows:
        entry = by_day.setdefault(row["day"], {"day": row["day"].isoformat(), **{lane: 0 for lane in Lane.values}})
        entry[row["lane"]] = row["n"]
    return list(by_day.values())
