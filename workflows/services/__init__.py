"""Every write in the domain. Each service checks state first, raises a DomainError on an
illegal move, and writes its audit event in the same transaction as the change.

Split by subject; import the services from here.
"""
from .audit_exports import (
    audit_export_job_claim,
    audit_export_job_create,
    audit_export_job_download,
    audit_export_job_fail,
    audit_export_job_run,
)
from .drafts import (
    draft_record,
    generation_claim,
    generation_fail,
    generation_requeued,
    generation_resume,
    may_retry,
    submission_create,
    submission_retry,
)
from .retention import erase_submissions_of, expired_submission_ids, legal_hold_set, purge_expired
from .reviews import (
    review_approve,
    review_claim,
    review_claim_next,
    review_refusal,
    review_regenerate,
    review_reject,
    review_release,
)
from .workflow import (
    GateResult,
    PublishRefused,
    run_publish_gate,
    version_candidate,
    version_from_threshold,
    version_publish,
    version_rollback,
    workflow_hold,
    workflow_publish,
    workflow_publish_yaml,
    workflow_resume,
)

__all__ = [
    "GateResult",
    "PublishRefused",
    "audit_export_job_claim",
    "audit_export_job_create",
    "audit_export_job_download",
    "audit_export_job_fail",
    "audit_export_job_run",
    "draft_record",
    "erase_submissions_of",
    "expired_submission_ids",
    "generation_claim",
    "generation_fail",
    "generation_requeued",
    "generation_resume",
    "legal_hold_set",
    "may_retry",
    "purge_expired",
    "review_approve",
    "review_claim",
    "review_claim_next",
    "review_refusal",
    "review_regenerate",
    "review_reject",
    "review_release",
    "submission_create",
    "submission_retry",
    "run_publish_gate",
    "version_candidate",
    "version_from_threshold",
    "version_publish",
    "version_rollback",
    "workflow_hold",
    "workflow_publish",
    "workflow_publish_yaml",
    "workflow_resume",
]
