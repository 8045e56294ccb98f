"""What a review task carries into the queue, decided when the task is opened.

Pure functions of the workflow definition, the submission's form values and the draft, so the
queue never re-reads a definition or decodes a draft's JSON to sort, badge or filter a row
(docs/ARCHITECTURE.md "Review queue").
"""
from __future__ import annotations

from .definitions import PRIORITIES, WorkflowDefinition
from .models import Lane

# Stored ranks: higher is more urgent; "normal" is 0 so tasks made before priorities sort as normal.
PRIORITY_RANK = {name: rank - PRIORITIES.index("normal") for rank, name in enumerate(PRIORITIES)}
PRIORITY_NAME = {rank: name for name, rank in PRIORITY_RANK.items()}


def effective_priority(spec: WorkflowDefinition, data: dict) -> int:
    """The workflow's priority, raised (never lowered) by every matching rule."""
    ranks = [PRIORITY_RANK[spec.routing.priority]]
    ranks += [PRIORITY_RANK[rule.priority] for rule in spec.routing.priority_rules if rule.matches(data)]
    return max(ranks)


def finding_codes(findings) -> str:
    """" a b " so a filter is one LIKE '% a %' on the row, and no code matches inside another."""
    return f" {' '.join(findings)} " if findings else ""


def review_task_fields(spec: WorkflowDefinition, lane: str, submission, draft) -> dict:
    """The queue's fields of a new ReviewTask (services/drafts.py opens it)."""
    return {
        "priority": effective_priority(spec, submission.data),
        "finding_codes": finding_codes(draft.findings),
        "approvals_required": 2 if spec.routing.two_approvals and lane == Lane.BLOCKING_REVIEW else 1,
    }
