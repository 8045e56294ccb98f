"""ReviewDesk's domain: workflows, their immutable versions, submissions, drafts, reviews and
the append-only audit log.

Writes go through ``workflows.services``; reads through ``workflows.selectors``.
"""
from __future__ import annotations

import json
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.functional import cached_property
from simple_history.models import HistoricalRecords

from .labels import Label


class DomainError(Exception):
    """An illegal move in the domain (wrong state, wrong actor). Views turn it into a 4xx."""


class IllegalTransition(DomainError):
    pass


class Workflow(models.Model):
    slug = models.SlugField(max_length=80, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    reviewer_groups = models.ManyToManyField(Group, related_name="reviewed_workflows", blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # A legal hold keeps every submission of the workflow from purge and erasure
    # (services/retention.py sets and clears it, with an audit event).
    legal_hold = models.BooleanField(default=False)
    legal_hold_reason = models.CharField(max_length=200, blank=True)
    # While automation is held, every new draft waits for a person: nothing is auto-approved or
    # released without one (routing.route's `hold`). A workflow admin stops it by hand; the
    # quality monitor (calibration/monitor.py) pauses it when the live escape rate's bound
    # passes the target. Only a person resumes it, with a reason.
    automation_hold = models.CharField(max_length=20, blank=True, choices=[("stopped", "stopped by an admin"),
                                                                           ("monitor", "paused by the quality monitor")])
    automation_hold_reason = models.TextField(blank=True)
    automation_held_at = models.DateTimeField(null=True, blank=True)
    # The escape rate the workflow accepts among auto-approved drafts (calibration's default
    # target, and the quality monitor's line); evidence before the last resume is not held against it.
    target_escape_rate = models.FloatField(default=0.05)
    automation_resumed_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords(m2m_fields=[reviewer_groups])

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def current_version(self) -> "WorkflowVersion | None":
        """The one definition of "current": the version published last. Candidates are not."""
        return self.versions.published().order_by("-published_at", "-number").first()


class WorkflowVersionQuerySet(models.QuerySet):
    def published(self):
        return self.filter(published_at__isnull=False)

    def candidates(self):
        return self.filter(published_at__isnull=True)


_SPECS: dict[tuple, object] = {}  # (version pk, definition hash) -> parsed definition


class WorkflowVersion(models.Model):
    """A published definition. Immutable: submissions point at the version they were made with."""

    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    # The same definition as JSON text in the author's key order. PostgreSQL's jsonb reorders
    # object keys, and the order of a schema's properties is the order the model writes them
    # and the page shows them, so the spec is parsed from this text.
    definition_text = models.TextField(blank=True)
    source_yaml = models.TextField(blank=True)
    definition_hash = models.CharField(max_length=64)
    published_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    # A version is a candidate until published (services.version_publish, through the eval
    # gate); only its publication is ever written after creation, and only once.
    published_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    # Why this version exists ("rollback to v2", "tone fix"), for the version list.
    note = models.CharField(max_length=300, blank=True)
    history = HistoricalRecords()

    objects = WorkflowVersionQuerySet.as_manager()

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [models.UniqueConstraint(fields=["workflow", "number"], name="uniq_workflow_version_number")]

    def __str__(self):
        return f"{self.workflow.slug} v{self.number}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.pop("_allow_update", False):
            raise DomainError("A published workflow version is immutable; publish a new version instead.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise DomainError("A published workflow version cannot be deleted.")

    @property
    def is_candidate(self) -> bool:
        return self.published_at is None

    @cached_property
    def spec(self):
        # Parsed once per process and version: a version is immutable, and every task, view
        # and template asks for it (pydantic validation costs about a millisecond a time).
        key = (self.pk, self.definition_hash)
        spec = _SPECS.get(key) if self.pk else None
        if spec is None:
            from .definitions import parse_definition

            spec = parse_definition(json.loads(self.definition_text) if self.definition_text else self.definition)
            if self.pk:
                _SPECS[key] = spec
        return spec


class Lane(models.TextChoices):
    AUTO_APPROVE = "auto_approve", "Auto-approve"
    ASYNC_REVIEW = "async_review", "Async review"
    BLOCKING_REVIEW = "blocking_review", "Blocking review"


class SubmissionState(models.TextChoices):
    SUBMITTED = "submitted", "Submitted"
    GENERATING = "generating", "Generating"
    ROUTED = "routed", "Awaiting review"
    REGENERATING = "regenerating", "Regenerating"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    FAILED = "failed", "Failed"
    # Generation waits (a workflow's monthly budget has a hard stop and is spent): the
    # submission is kept and goes back to "submitted" when the budget allows again.
    PAUSED = "paused", "On hold"


# The submission state machine, in one place. Every state change goes through
# Submission.transition_to, which consults this table.
TRANSITIONS: dict[str, set[str]] = {
    SubmissionState.SUBMITTED: {SubmissionState.GENERATING, SubmissionState.FAILED, SubmissionState.PAUSED},
    SubmissionState.GENERATING: {SubmissionState.ROUTED, SubmissionState.FAILED},
    SubmissionState.ROUTED: {
        SubmissionState.APPROVED,
        SubmissionState.REJECTED,
        SubmissionState.REGENERATING,
    },
    SubmissionState.REGENERATING: {SubmissionState.GENERATING, SubmissionState.FAILED, SubmissionState.PAUSED},
    # Paused by the generation gate (a spent budget with a hard stop); resumed as a new request,
    # so the claim, the sweep and the retry treat it like any other waiting submission. A
    # regeneration's feedback stays in regenerate_feedback and is used when it is drafted.
    SubmissionState.PAUSED: {SubmissionState.SUBMITTED},
    # An auto-approved draft picked for the audit sample can still be retracted by its reviewer.
    SubmissionState.APPROVED: {SubmissionState.REJECTED},
    SubmissionState.REJECTED: set(),
    # Retried by the submitter, a reviewer, or automatically once a provider's circuit closes.
    SubmissionState.FAILED: {SubmissionState.SUBMITTED},
}
TERMINAL_STATES = {SubmissionState.APPROVED, SubmissionState.REJECTED, SubmissionState.FAILED}
# Waiting for a draft: the one state question ("still drafting?") the pages and the sweep ask.
DRAFTING_STATES = (SubmissionState.SUBMITTED, SubmissionState.GENERATING, SubmissionState.REGENERATING)
# Waiting for a task to claim it (a worker has not taken it yet).
WAITING_STATES = (SubmissionState.SUBMITTED, SubmissionState.REGENERATING)


FAILURE_MESSAGES = {
    "provider_unavailable": "The drafting service is not answering right now. We will try again "
    "automatically as soon as it is back; you can also try again yourself.",
    "provider_refused": "The drafting service refused the request. An administrator has the details; "
    "you can try again once it is fixed.",
    "": "Something went wrong while preparing the draft. You can try again; your answers are kept.",
}


# What a submitter reads while generation is on hold: plain words, no amounts or thresholds.
PAUSED_MESSAGE = (
    "Drafting is on hold: this workflow has reached its spending limit for the month. Your request "
    "is saved and will be drafted automatically as soon as the limit is raised or the new month "
    "begins. You do not need to send it again."
)


class SubmissionQuerySet(models.QuerySet):
    def paused(self):
        return self.filter(state=SubmissionState.PAUSED)

    def drafting(self):
        return self.filter(state__in=DRAFTING_STATES)

    def waiting_for_worker(self):
        return self.filter(state__in=WAITING_STATES)

    def _stale_claim(self, stale_before):
        """A generation claim whose worker is presumed dead: its heartbeat stopped (no beat for
        REVIEWDESK_HEARTBEAT_STALE_SECONDS, measured on the database's clock so that workers'
        clocks do not matter), or it began before the hard stale limit (a claim made before
        heartbeats existed has none; a task past its time limit is broken whatever it beats)."""
        heartbeat_stale = Now() - timedelta(seconds=settings.REVIEWDESK_HEARTBEAT_STALE_SECONDS)
        return models.Q(state=SubmissionState.GENERATING) & (
            models.Q(generation_started_at__lt=stale_before) | models.Q(claim_heartbeat_at__lt=heartbeat_stale)
        )

    def claimable(self, *, stale_before):
        """Waiting for a worker, or claimed by one that died (its claim is older than the
        stale limit)."""
        return self.filter(models.Q(state__in=WAITING_STATES) | self._stale_claim(stale_before))

    def stalled(self, *, waiting_since, stale_before):
        """Lost tasks: never picked up within the grace period, or claimed and abandoned."""
        return self.filter(
            models.Q(state__in=WAITING_STATES, updated_at__lt=waiting_since) | self._stale_claim(stale_before)
        )

    def failed_retryable(self):
        """Failed because no provider answered: retried automatically when a circuit closes."""
        return self.filter(state=SubmissionState.FAILED, failure_kind="provider_unavailable")


class ErasureReason(models.TextChoices):
    RETENTION = "retention", "retention period over"
    REQUEST = "request", "at the person's request"


class Submission(models.Model):
    workflow_version = models.ForeignKey(WorkflowVersion, on_delete=models.PROTECT, related_name="submissions")
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="submissions")
    data = models.JSONField()
    state = models.CharField(max_length=20, choices=SubmissionState.choices, default=SubmissionState.SUBMITTED)
    lane = models.CharField(max_length=20, choices=Lane.choices, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    generation_started_at = models.DateTimeField(null=True, blank=True)
    # Refreshed every REVIEWDESK_HEARTBEAT_SECONDS by the worker that holds the generation claim
    # (workflows/heartbeat.py); a claim whose heartbeat stopped is taken over by the sweep.
    claim_heartbeat_at = models.DateTimeField(null=True, blank=True)
    regenerate_feedback = models.TextField(blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    retracted_at = models.DateTimeField(null=True, blank=True)
    final_output = models.TextField(blank=True)
    # Why generation failed: the kind decides the plain words a submitter sees and whether the
    # app retries by itself; the reason is the provider's text, for staff only.
    failure_kind = models.CharField(max_length=30, blank=True)
    failure_reason = models.TextField(blank=True)
    idempotency_key = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    legal_hold = models.BooleanField(default=False)
    legal_hold_reason = models.CharField(max_length=200, blank=True)
    # Tombstone: personal data was removed from this row, its drafts, calls, reviews and their
    # history (services/retention.py); ids, states, hashes, costs and scores remain.
    erased_at = models.DateTimeField(null=True, blank=True)
    erasure_reason = models.CharField(max_length=20, choices=ErasureReason.choices, blank=True)
    # A heartbeat is liveness, not a fact about the submission: it is written by plain UPDATEs
    # every few seconds and kept out of the history.
    history = HistoricalRecords(excluded_fields=["claim_heartbeat_at"])

    objects = SubmissionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state"]), models.Index(fields=["submitted_by", "-created_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["submitted_by", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="uniq_submission_idempotency_key",
            )
        ]

    def __str__(self):
        return f"Submission #{self.pk} ({self.workflow_version})"

    @property
    def workflow(self) -> Workflow:
        return self.workflow_version.workflow

    @property
    def is_erased(self) -> bool:
        return self.erased_at is not None

    @property
    def is_released(self) -> bool:
        return self.released_at is not None and self.retracted_at is None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def is_drafting(self) -> bool:
        return self.state in DRAFTING_STATES

    @property
    def is_generating(self) -> bool:
        return self.state == SubmissionState.GENERATING

    @property
    def is_awaiting_review(self) -> bool:
        return self.state == SubmissionState.ROUTED

    @property
    def is_paused(self) -> bool:
        return self.state == SubmissionState.PAUSED

    @property
    def paused_message(self) -> str:
        return PAUSED_MESSAGE

    @property
    def is_failed(self) -> bool:
        return self.state == SubmissionState.FAILED

    @property
    def is_rejected(self) -> bool:
        return self.state == SubmissionState.REJECTED

    @property
    def failure_message(self) -> str:
        """Why drafting failed, in words for the submitter (never the provider's own text)."""
        return FAILURE_MESSAGES.get(self.failure_kind, FAILURE_MESSAGES[""])

    @property
    def latest_draft(self) -> "Draft | None":
        return self.drafts.order_by("-attempt").first()

    def transition_to(self, new_state: str) -> None:
        if new_state not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"Submission #{self.pk} cannot go from {self.state} to {new_state}.")
        self.state = new_state


class Draft(models.Model):
    submission = models.ForeignKey(Submission, on_delete=models.PROTECT, related_name="drafts")
    attempt = models.PositiveIntegerField()
    engine = models.CharField(max_length=20)  # "openai" or "offline"
    model = models.CharField(max_length=200)
    content = models.TextField()
    parsed = models.JSONField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    score = models.FloatField()
    score_components = models.JSONField(default=dict)
    findings = models.JSONField(default=list)
    lane = models.CharField(max_length=20, choices=Lane.choices)
    content_hash = models.CharField(max_length=64)
    model_requested = models.CharField(max_length=200, blank=True)
    # Every call of this attempt: the draft, a repair, a cascade, the QA grade, failed tries.
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    cache_hit = models.BooleanField(default=False)
    # Answers the pipeline replaced (the unrepaired answer, the draft a cascade re-did), kept
    # so the reviewer and the auditor see every try: [{purpose, model, content, score, findings}].
    earlier_attempts = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    history = HistoricalRecords()

    class Meta:
        ordering = ["submission", "attempt"]
        constraints = [
            # One draft per attempt: a redelivered generation task cannot create a second one.
            models.UniqueConstraint(fields=["submission", "attempt"], name="uniq_draft_attempt"),
        ]

    def __str__(self):
        return f"Draft {self.submission_id}/{self.attempt}"


class LLMCall(models.Model):
    """One request to a model provider, successful or not: the raw material of cost tracking."""

    submission = models.ForeignKey(Submission, on_delete=models.PROTECT, related_name="llm_calls")
    attempt = models.PositiveIntegerField()
    purpose = models.CharField(max_length=20, default="draft")  # vocab.CallPurpose
    engine = models.CharField(max_length=20)
    model = models.CharField(max_length=200)  # the model asked for
    model_reported = models.CharField(max_length=200, blank=True)  # the model the server says answered
    outcome = models.CharField(max_length=20, default="ok")  # vocab.CallOutcome
    ok = models.BooleanField()
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)  # the provider's text: staff only, never shown to submitters
    dropped_parameters = models.JSONField(default=list, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]


class ReviewState(models.TextChoices):
    OPEN = "open", "Open"
    DONE = "done", "Done"
    CANCELLED = "cancelled", "Cancelled"


class Decision(models.TextChoices):
    APPROVE = "approve", "Approve"
    EDIT = "edit", "Approve with edit"
    REJECT = "reject", "Reject"
    REGENERATE = "regenerate", "Regenerate"


class RejectReason(models.TextChoices):
    INACCURATE = "inaccurate", "Inaccurate or wrong facts"
    TONE = "tone", "Wrong tone"
    POLICY = "policy", "Violates policy"
    INCOMPLETE = "incomplete", "Incomplete"
    OTHER = "other", "Other"


# The review task state machine, in one place like the submission's (ReviewTask.transition_to).
REVIEW_TRANSITIONS: dict[str, set[str]] = {
    ReviewState.OPEN: {ReviewState.DONE, ReviewState.CANCELLED},
    ReviewState.DONE: set(),
    ReviewState.CANCELLED: set(),
}


class ReviewTaskQuerySet(models.QuerySet):
    def open(self):
        return self.filter(state=ReviewState.OPEN)

    def decided(self):
        return self.filter(state=ReviewState.DONE)


class ReviewTask(models.Model):
    submission = models.ForeignKey(Submission, on_delete=models.PROTECT, related_name="review_tasks")
    draft = models.ForeignKey(Draft, on_delete=models.PROTECT, related_name="review_tasks")
    lane = models.CharField(max_length=20, choices=Lane.choices)
    sampled = models.BooleanField(default=False)  # an auto-approved draft drawn for audit
    state = models.CharField(max_length=20, choices=ReviewState.choices, default=ReviewState.OPEN)
    # A claim is a lease, never a row lock held across an HTTP request.
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    due_at = models.DateTimeField(null=True, blank=True)
    decision = models.CharField(max_length=20, choices=Decision.choices, blank=True)
    reason_code = models.CharField(max_length=20, choices=RejectReason.choices, blank=True)
    reason_text = models.TextField(blank=True)
    edited_output = models.TextField(blank=True)
    diff = models.TextField(blank=True)
    # What the decision says about the draft (workflows/labels.py): unchanged, minor or major
    # edit, rejected. Kept on the row because an erasure later clears the edited text.
    label = models.CharField(max_length=20, blank=True, choices=[(x.value, x.value.replace("_", " ")) for x in Label])
    edit_distance = models.FloatField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # SLA (workflows/notifications.py): set once by the periodic check when the task passes
    # due_at, and when it passes the workflow's routing.escalate_after_minutes, which also hands
    # it to the escalation group (escalated_to): its members may then see and decide it.
    overdue_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    escalated_to = models.ForeignKey(Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # When the reviewers' digest took this (blocking) task up: each task is announced once.
    announced_at = models.DateTimeField(null=True, blank=True)
    # The queue (docs/ARCHITECTURE.md "Review queue"): the effective priority (the workflow's
    # routing.priority raised by its priority_rules, workflows/queue.py), the draft's finding
    # codes copied as " code code " so list rows and the finding filter never decode
    # Draft.findings, and how many distinct approvals the decision needs (2 with
    # routing.two_approvals in the blocking lane) with how many the current text has.
    priority = models.SmallIntegerField(default=0)
    finding_codes = models.CharField(max_length=300, blank=True, default="")
    approvals_required = models.PositiveSmallIntegerField(default=1)
    approvals_given = models.PositiveSmallIntegerField(default=0)
    # The text the approvals so far are for, when a first approver edited the draft.
    pending_output = models.TextField(blank=True, default="")
    history = HistoricalRecords()

    objects = ReviewTaskQuerySet.as_manager()

    class Meta:
        ordering = ["due_at", "created_at"]
        indexes = [
            models.Index(fields=["state", "lane"]),
            # The queue's order over open tasks only, per tab (lane and audit sample): the page,
            # its keyset pages, the capped counts and Next read the index in order and stop,
            # whatever the number of decided tasks; a rare tab (the audit sample) is a short
            # range of its own rather than a filter over the whole async lane.
            models.Index(
                # due_at ascending is NULLS LAST on PostgreSQL already, the queue's ORDER BY; SQLite
                # (make run) cannot create an index that spells it out.
                models.F("lane"), models.F("sampled"), models.F("due_at"), models.F("priority").desc(),
                models.F("id"), condition=models.Q(state="open"), name="reviewtask_open_queue",
            ),
            # The same order across lanes: Next without a lane (the most urgent anywhere).
            models.Index(
                models.F("due_at"), models.F("priority").desc(), models.F("id"),
                condition=models.Q(state="open"), name="reviewtask_open_next",
            ),
            # The queue's order over open tasks that have findings: the finding filter ("any", or
            # one code, which selectors.QueueFilters also spells as "has findings" so that the
            # planner can use this index) walks the few such tasks in order, where the index
            # above would filter the whole tab when findings are rare.
            models.Index(
                models.F("lane"), models.F("sampled"), models.F("due_at"), models.F("priority").desc(),
                models.F("id"), condition=models.Q(state="open") & ~models.Q(finding_codes=""),
                name="reviewtask_open_findings",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["draft"], condition=models.Q(state="open"), name="uniq_open_review_per_draft"
            )
        ]

    def __str__(self):
        return f"Review #{self.pk} of submission #{self.submission_id}"

    def lease_held_by(self, user) -> bool:
        return (
            self.claimed_by_id == user.pk
            and self.lease_expires_at is not None
            and self.lease_expires_at > timezone.now()
        )

    @property
    def lease_active(self) -> bool:
        return self.lease_expires_at is not None and self.lease_expires_at > timezone.now()

    @property
    def is_open(self) -> bool:
        return self.state == ReviewState.OPEN

    def transition_to(self, new_state: str) -> None:
        if new_state not in REVIEW_TRANSITIONS[self.state]:
            raise IllegalTransition(f"Review #{self.pk} cannot go from {self.state} to {new_state}.")
        self.state = new_state


class ReviewApproval(models.Model):
    """One reviewer's approval of one text of a review that needs two (routing.two_approvals).
    An edit by a later reviewer supersedes the approvals of the text it changed."""

    task = models.ForeignKey(ReviewTask, on_delete=models.PROTECT, related_name="approvals")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    output_hash = models.CharField(max_length=64)
    superseded = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["task", "reviewer"], condition=models.Q(superseded=False), name="uniq_current_approval_per_reviewer"
            )
        ]


class AuditEvent(models.Model):
    """Append-only, SHA-256 hash-chained record of every transition (see workflows.audit).

    The model refuses updates and deletes; on PostgreSQL a trigger refuses them too, so even
    raw SQL cannot rewrite history without breaking the chain.
    """

    created_at = models.DateTimeField()
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    actor_label = models.CharField(max_length=150)  # username, or "system"
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    workflow_version = models.ForeignKey(
        WorkflowVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    payload = models.JSONField(default=dict)
    request_id = models.CharField(max_length=64, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    # Position in the chain, and the links: null until the chainer links the committed event
    # (workflows.audit.chain_pending; on SQLite set at insert). The chain's order is seq, not id.
    seq = models.BigIntegerField(null=True, blank=True, unique=True)
    prev_hash = models.CharField(max_length=64, null=True, blank=True)
    hash = models.CharField(max_length=64, unique=True, null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["object_type", "object_id"]),
            models.Index(fields=["action"]),
            models.Index(fields=["created_at"]),
            # The chainer's queue: the few events not linked yet, in id order.
            models.Index(fields=["id"], condition=models.Q(seq__isnull=True), name="auditevent_unchained"),
        ]

    def __str__(self):
        return f"{self.id} {self.action} {self.object_type}:{self.object_id}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise DomainError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise DomainError("Audit events are append-only.")


class AuditExportJob(models.Model):
    """An audit export written to a file by a worker (workflows.tasks.run_audit_export), for
    exports too big to stream inside a web request. The file and its manifest live in
    REVIEWDESK_EXPORT_DIR; the row keeps the request, the progress and the outcome.

    Not history-tracked: progress is written once per batch, which would be a history row per
    batch; what matters for the record (asked, finished or failed, each download) is in the
    audit chain.
    """

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    format = models.CharField(max_length=8)
    # ExportFilters.as_manifest(): times as ISO 8601, the rest as given.
    filters = models.JSONField(default=dict)
    upto = models.BigIntegerField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    total = models.BigIntegerField(default=0)
    rows_written = models.BigIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    progress_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    file_name = models.CharField(max_length=200, blank=True)
    file_sha256 = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["requested_by", "-id"])]

    def __str__(self):
        return f"export job {self.pk} ({self.format}, {self.state})"

    @property
    def active(self) -> bool:
        return self.state in (self.State.QUEUED, self.State.RUNNING)

    @property
    def percent(self) -> int:
        if self.state == self.State.DONE:
            return 100
        return min(100, int(self.rows_written * 100 / self.total)) if self.total else 0


# --- Notifications (workflows/notifications.py) ----------------------------------------------


class NotificationKind(models.TextChoices):
    """What a user may be told by e-mail; each is one choice on the preferences page."""

    NEW_WORK = "new_work", "New blocking reviews in my workflows (a digest)"
    OVERDUE = "overdue", "Reviews in my workflows that pass their due time"
    ESCALATION = "escalation", "Reviews escalated to a group I belong to"
    DECISION = "decision", "A decision on one of my requests"
    RETRACTION = "retraction", "A text released for one of my requests is withdrawn"


class NotificationPreference(models.Model):
    """Which e-mails one user receives. No row: every kind is on (the defaults)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preference")
    new_work = models.BooleanField(default=True)
    overdue = models.BooleanField(default=True)
    escalation = models.BooleanField(default=True)
    decision = models.BooleanField(default=True)
    retraction = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    def wants(self, kind: str) -> bool:
        return bool(getattr(self, NotificationKind(kind).value))


class NotificationState(models.TextChoices):
    PENDING = "pending", "Waiting to be sent"
    SENT = "sent", "Sent"
    SKIPPED = "skipped", "Not sent (turned off or nothing left to say)"
    FAILED = "failed", "Gave up after repeated failures"


class Notification(models.Model):
    """One e-mail to one person: an outbox row written in the transaction that decides it is
    due, sent afterwards by a Celery task. It holds ids only; the text is rendered when it is
    sent, so an erasure leaves nothing personal here.

    ``next_attempt_at`` is both the retry time and the claim: a sender moves it a few minutes
    ahead before it talks to the mail server, so two senders never send the same row.
    """

    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20, choices=NotificationKind.choices)
    # The review tasks a reviewer's message lists (digest, overdue, escalation).
    review_task_ids = models.JSONField(default=list, blank=True)
    # The request a submitter's message is about (decision, retraction), and the decided task.
    submission = models.ForeignKey(Submission, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    review_task = models.ForeignKey(ReviewTask, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    # One message per event: a second hook or task run for the same event finds this key taken.
    dedupe_key = models.CharField(max_length=120, blank=True)
    state = models.CharField(max_length=10, choices=NotificationState.choices, default=NotificationState.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["next_attempt_at"], condition=models.Q(state="pending"),
                                name="notification_pending_idx"),
                   # The retention purge (notifications.purge_finished) finds old rows that are
                   # done with here, instead of reading the whole outbox every hour.
                   models.Index(fields=["created_at"], condition=~models.Q(state="pending"),
                                name="notification_finished_idx")]
        constraints = [
            models.UniqueConstraint(fields=["recipient", "dedupe_key"], condition=~models.Q(dedupe_key=""),
                                    name="uniq_notification_per_event"),
        ]

    def __str__(self):
        return f"{self.kind} to {self.recipient_id} ({self.state})"
