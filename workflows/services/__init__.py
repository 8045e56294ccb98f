"""Every write in the domain. Each service checks state first, raises a DomainError on an
illegal move, and writes its audit event in the same transaction as the change.

Split by subject; import the services from here.
"""
from .drafts import draft_record, generation_claim, generation_fail, generation_requeued, submission_create
from .reviews import review_approve, review_claim, review_regenerate, review_reject, review_release
from .workflow import workflow_publish, workflow_publish_yaml

__all__ = [
    "draft_record",
    "generation_claim",
    "generation_fail",
    "generation_requeued",
    "review_approve",
    "review_claim",
    "review_regenerate",
    "review_reject",
    "review_release",
    "submission_create",
    "workflow_publish",
    "workflow_publish_yaml",
]
