"""Eval datasets, their cases, and runs of a workflow version over a dataset."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from workflows.models import Workflow, WorkflowVersion


class Dataset(models.Model):
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="eval_datasets")
    name = models.SlugField(max_length=80)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["workflow", "name"]
        constraints = [models.UniqueConstraint(fields=["workflow", "name"], name="uniq_dataset_name")]

    def __str__(self):
        return f"{self.workflow.slug}/{self.name}"


class Provenance(models.TextChoices):
    """Where a case came from, so a dataset row can always say."""
    AUTHORED = "authored", "written by hand"
    IMPORTED = "imported", "imported from JSON Lines"
    CAPTURED = "captured", "a reviewed draft, captured as approved"
    CORRECTED = "corrected", "a reviewed draft, as the reviewer corrected it"
    REJECTED = "rejected", "a draft a reviewer rejected"


class Case(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="cases")
    key = models.CharField(max_length=120)  # stable name within the dataset (JSON Lines "id")
    input = models.JSONField()  # the form values, as a submitter would give them
    expect = models.JSONField(default=dict)  # evals/expectations.py
    note = models.TextField(blank=True)
    provenance = models.CharField(max_length=20, choices=Provenance.choices, default=Provenance.AUTHORED)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    source_submission_id = models.BigIntegerField(null=True, blank=True)
    source_version_number = models.PositiveIntegerField(null=True, blank=True)
    # For a case made from a review: the draft the reviewer judged, and their label. The judge's
    # agreement with reviewers is measured on these (evals/judge.py).
    reference_output = models.TextField(blank=True)
    reviewer_label = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["dataset", "key"]
        constraints = [models.UniqueConstraint(fields=["dataset", "key"], name="uniq_case_key")]

    def __str__(self):
        return f"{self.dataset}#{self.key}"

    @property
    def provenance_record(self) -> dict:
        """Where this row came from, as the JSON Lines export and the page say it."""
        record = {"source": self.provenance}
        if self.created_by_id:
            record["by"] = self.created_by.get_username()
        if self.source_submission_id:
            record["submission"] = self.source_submission_id
        if self.source_version_number:
            record["version"] = self.source_version_number
        return record


class RunState(models.TextChoices):
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    # Stopped for good, with EvalRun.failure_reason: its cases kept killing their workers, could
    # not be sent again, or raised an error outside the per-case checks. Never a measurement: the
    # publish gate refuses it and asks for a new run (evals/gate.py).
    FAILED = "failed", "Failed"


class RunPurpose(models.TextChoices):
    MANUAL = "manual", "run by hand"
    DRY_RUN = "dry_run", "dry run"
    GATE = "gate", "publish gate"
    DRIFT = "drift", "scheduled drift check"


class EvalRun(models.Model):
    version = models.ForeignKey(WorkflowVersion, on_delete=models.PROTECT, related_name="eval_runs")
    purpose = models.CharField(max_length=20, choices=RunPurpose.choices, default=RunPurpose.MANUAL)
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="runs")
    state = models.CharField(max_length=20, choices=RunState.choices, default=RunState.RUNNING)
    total = models.PositiveIntegerField(default=0)
    completed = models.PositiveIntegerField(default=0)
    passed = models.PositiveIntegerField(default=0)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Why a failed run stopped, in words its page and the publish gate show.
    failure_reason = models.CharField(max_length=500, blank=True)
    # The sweep's re-sends of its missing cases (services.eval_runs_sweep): how many, and the
    # last one, from which the stall clock starts again so the re-sent cases get their time.
    resends = models.PositiveSmallIntegerField(default=0)
    resent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.completed if self.completed else None


class CaseResult(models.Model):
    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="results")
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="results")
    passed = models.BooleanField()
    failures = models.JSONField(default=list)
    content = models.TextField(blank=True)
    schema_valid = models.BooleanField(default=False)
    lane = models.CharField(max_length=20, blank=True)
    score = models.FloatField(null=True)
    findings = models.JSONField(default=list)
    model = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    judge_grade = models.FloatField(null=True, blank=True)
    # What the judge held against the draft; in `failures` too only when the judge was trusted.
    judge_failures = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["run", "case__key"]
        # One result per case and run: a redelivered task cannot count a case twice.
        constraints = [models.UniqueConstraint(fields=["run", "case"], name="uniq_case_result")]


class JudgeAgreement(models.Model):
    """How often the judge model agreed with reviewers on a dataset's reviewed cases: the judge
    grades each case's reference output (the draft the reviewer saw) against the case's rubric;
    "acceptable" is a grade >= 0.5 against a reviewer label of unchanged or minor edit."""
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="judge_agreements")
    model = models.CharField(max_length=200)
    cases = models.PositiveIntegerField()
    agreed = models.PositiveIntegerField()
    details = models.JSONField(default=list)  # [{case, reviewer, judge, grade}]
    measured_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    measured_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-measured_at"]

    @property
    def rate(self) -> float | None:
        return self.agreed / self.cases if self.cases else None
