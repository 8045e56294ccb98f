"""One word for each thing: finding codes, audit actions and model-call vocabulary.

Every place that names a finding or an audit action uses these enums, so a typo is an
AttributeError at import time instead of an event nobody can filter on. They are StrEnums:
the stored and hashed value is the plain string, unchanged from before the enums existed.
"""
from __future__ import annotations

from enum import StrEnum


class Finding(StrEnum):
    """What a validator (or the pipeline) found wrong with a draft."""

    SCHEMA_INVALID = "schema_invalid"  # not JSON, or JSON that breaks the workflow's schema
    EMPTY_OUTPUT = "empty_output"
    LENGTH_EXCEEDED = "length_exceeded"  # longer than output.max_chars
    TRUNCATED = "truncated"  # the provider stopped at max_tokens (finish_reason "length")
    PII_IN_OUTPUT = "pii_in_output"  # personal data in the draft that the input did not supply
    GUARDRAIL = "guardrail"  # banned term, blocked topic, obeyed injection, talk about its own approval
    UNRESOLVED_PLACEHOLDER = "unresolved_placeholder"  # a redaction placeholder the model mangled
    QA_FAILED = "qa_failed"  # the grading model judged the draft unacceptable
    # Personal data the detector found in the request's free text (not a `pii: true` field),
    # redacted before the model and restored into the draft: the draft carries it.
    PII_RESTORED = "pii_restored"


# Findings that block whatever a workflow lists in routing.always_block_on: a truncated
# answer is a partial draft, an empty one has nothing to release, and one with a placeholder
# still in it would go out saying "<CUSTOMER_NAME>". Any other finding still keeps a draft out
# of auto-approval (routing.route).
ALWAYS_BLOCKING = frozenset({Finding.UNRESOLVED_PLACEHOLDER, Finding.TRUNCATED, Finding.EMPTY_OUTPUT})

# Findings about what a draft carries rather than a fault in it. Like any finding they keep
# the draft out of auto-approval (routing.route), and they block when the workflow lists them
# in routing.always_block_on; but they do not cap the score (pipeline/confidence.py): the model
# was no less sure, and the score still drives calibration and the cascade.
NOT_FAULTS = frozenset({Finding.PII_RESTORED})


class AuditAction(StrEnum):
    SUBMISSION_CREATED = "submission.created"
    SUBMISSION_RETRIED = "submission.retried"
    DRAFT_GENERATION_STARTED = "draft.generation_started"
    DRAFT_GENERATED = "draft.generated"
    DRAFT_ROUTED = "draft.routed"
    DRAFT_FAILED = "draft.failed"
    REVIEW_AUTO_APPROVED = "review.auto_approved"
    REVIEW_CLAIMED = "review.claimed"
    REVIEW_UNCLAIMED = "review.unclaimed"
    REVIEW_APPROVED = "review.approved"
    REVIEW_EDITED = "review.edited"
    REVIEW_REJECTED = "review.rejected"
    REVIEW_REGENERATE_REQUESTED = "review.regenerate_requested"
    # One approval of a review that needs two (routing.two_approvals); the task stays open.
    REVIEW_APPROVAL_RECORDED = "review.approval_recorded"
    OUTPUT_RELEASED = "output.released"
    OUTPUT_RETRACTED = "output.retracted"
    WORKFLOW_PUBLISHED = "workflow.published"
    WORKFLOW_CANDIDATE_CREATED = "workflow.candidate_created"
    WORKFLOW_PUBLISH_OVERRIDDEN = "workflow.publish_overridden"  # published although the gate refused
    WORKFLOW_ROLLED_BACK = "workflow.rolled_back"
    EVAL_DRIFT_DETECTED = "eval.drift_detected"  # the current version's scheduled eval fell beyond the margin  # an earlier definition copied as a new candidate
    AUDIT_EXPORTED = "audit.exported"
    AUDIT_EXPORT_REQUESTED = "audit.export_requested"  # an export job was asked for (workflows.tasks.run_audit_export)
    AUDIT_EXPORT_DOWNLOADED = "audit.export_downloaded"  # a finished job's file or manifest was downloaded
    AUDIT_EXPORT_PURGED = "audit.export_purged"  # finished export jobs past REVIEWDESK_EXPORT_RETENTION_DAYS deleted
    EVIDENCE_EXPORTED = "evidence.exported"  # a submission's evidence bundle was downloaded
    AUDIT_VERIFIED = "audit.verified"  # a checkpoint: the verified head (workflows/audit_chain.py)
    AUDIT_ANCHORED = "audit.anchored"  # the verified head written outside the database
    AUTH_DENIED = "auth.denied"
    AUTH_LOGIN_FAILED = "auth.login_failed"  # rate-limited per client address (workflows/logins.py)
    AUTH_LOCKED_OUT = "auth.locked_out"  # a username + address pair reached the failure limit
    SUBMISSION_ERASED = "submission.erased"
    ERASURE_COMPLETED = "erasure.completed"
    RETENTION_PURGED = "retention.purged"
    LEGAL_HOLD_SET = "legal_hold.set"
    LEGAL_HOLD_CLEARED = "legal_hold.cleared"
    AUTOMATION_STOPPED = "automation.stopped"  # a workflow admin held every draft for a person
    AUTOMATION_PAUSED = "automation.paused"  # the quality monitor did, on the live escape rate
    AUTOMATION_RESUMED = "automation.resumed"
    # Costs, budgets and alerts (issue 9; the costs app writes most of them).
    GENERATION_PAUSED = "generation.paused"  # the generation gate held a submission (spent budget)
    GENERATION_RESUMED = "generation.resumed"  # a held submission went back to the queue
    BUDGET_CHANGED = "budget.changed"  # a workflow's monthly budget or hard stop was set or changed
    BUDGET_WARNING_SENT = "budget.warning_sent"  # spend passed the warning share (once a month)
    LATENCY_TARGET_CHANGED = "latency_target.changed"
    ALERT_RULE_CHANGED = "alert_rule.changed"  # created, edited or deleted
    ALERT_SENT = "alert.sent"  # an alert rule fired and its message went out
    # SLA (issue 8, workflows/notifications.py).
    REVIEW_OVERDUE = "review.overdue"  # an open review passed its due time (marked once)
    REVIEW_ESCALATED = "review.escalated"  # past routing.escalate_after_minutes: handed to the escalation group


class CallPurpose(StrEnum):
    """Why a model call was made (one LLMCall row per HTTP request)."""

    DRAFT = "draft"
    REPAIR = "repair"  # the one regeneration with the validation error fed back
    CASCADE = "cascade"  # re-draft with model.escalate_to
    QA = "qa"  # the grading call
    SAMPLE = "sample"  # a second sample for agreement-based certainty


class CallOutcome(StrEnum):
    OK = "ok"
    CACHE_HIT = "cache_hit"  # no request was sent; the stored answer was reused
    ERROR = "error"  # 5xx, connection error, unparseable answer
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    REFUSED_PARAMETER = "refused_parameter"  # the server rejected a parameter; retried without it
    CIRCUIT_OPEN = "circuit_open"  # no request was sent: the model's breaker is open
    CLIENT_ERROR = "client_error"  # 4xx that retrying cannot fix (bad key, unknown model)


class FailureKind(StrEnum):
    """Why a generation ended in `failed`; decides the plain words and the automatic retry."""

    PROVIDER_UNAVAILABLE = "provider_unavailable"  # every model down or its circuit open: retried when one closes
    PROVIDER_REFUSED = "provider_refused"  # e.g. bad key or unknown model: a person must act
    INTERNAL = "internal"  # a bug or a database error on our side
