"""Every read, scoped to the user asking. Objects outside the scope simply do not exist (404)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery, Sum
from django.utils import timezone

from .denials import get_in_scope
from .models import AuditEvent, AuditExportJob, Lane, LLMCall, ReviewTask, Submission, Workflow, WorkflowVersion
from .roles import COMPLIANCE, REVIEWER, SUBMITTER, WORKFLOW_ADMIN, group_ids, has_role


def _reviewable_workflows_q(user) -> Q:
    return Q(reviewer_groups__in=user.groups.all())


def _escalated_to_user_q(user, prefix: str = "") -> Q:
    """Review tasks escalated to one of the user's groups (issue 8): exactly those tasks, no
    other task of their workflows."""
    return Q(**{f"{prefix}escalated_at__isnull": False, f"{prefix}escalated_to__in": user.groups.all()})


def workflows_for_submitter(user) -> QuerySet[Workflow]:
    if not has_role(user, SUBMITTER):
        return Workflow.objects.none()
    return Workflow.objects.filter(versions__isnull=False).distinct().order_by("name")


def workflow_for_submitter(user, slug: str) -> Workflow:
    return get_in_scope(workflows_for_submitter(user), slug=slug)


def workflows_for_admin(user) -> QuerySet[Workflow]:
    """Every workflow with its versions, for the people who define them."""
    if not has_role(user, WORKFLOW_ADMIN):
        return Workflow.objects.none()
    return Workflow.objects.prefetch_related("versions", "reviewer_groups").order_by("name")


def submissions_for(user) -> QuerySet[Submission]:
    """Compliance sees all; a reviewer sees their workflows' submissions; anyone sees their own.

    Workflow admins define workflows; they do not read submissions by virtue of that role.
    """
    qs = Submission.objects.select_related("workflow_version__workflow", "submitted_by")
    if has_role(user, COMPLIANCE):
        return qs
    scope = Q(submitted_by=user)
    if has_role(user, REVIEWER):
        reviewable = Workflow.objects.filter(_reviewable_workflows_q(user)).values("pk")
        scope |= Q(workflow_version__workflow__in=reviewable)
        scope |= Q(pk__in=ReviewTask.objects.filter(_escalated_to_user_q(user)).values("submission_id"))
    return qs.filter(scope)


def own_submissions(user) -> QuerySet[Submission]:
    return Submission.objects.select_related("workflow_version__workflow", "submitted_by").filter(submitted_by=user)


def submission_for(user, pk: int) -> Submission:
    return get_in_scope(submissions_for(user), pk=pk)


def review_tasks_for(user) -> QuerySet[ReviewTask]:
    """Review tasks this user may work: their groups' workflows, and tasks escalated to one of
    their groups (issue 8); never their own submissions."""
    if not has_role(user, REVIEWER):
        return ReviewTask.objects.none()
    reviewable = Workflow.objects.filter(_reviewable_workflows_q(user)).values("pk")
    return (
        ReviewTask.objects.select_related("submission__workflow_version__workflow", "submission__submitted_by", "draft", "claimed_by")
        .filter(Q(submission__workflow_version__workflow__in=reviewable) | _escalated_to_user_q(user))
        .exclude(submission__submitted_by=user)
    )


def open_review_tasks_for(user, lane: str | None = None) -> QuerySet[ReviewTask]:
    qs = review_tasks_for(user).open()
    if lane:
        qs = qs.filter(lane=lane)
    # The primary key last: pages of the queue must not share or skip rows with equal times.
    return qs.order_by("due_at", "created_at", "pk")


def review_task_for(user, pk: int) -> ReviewTask:
    return get_in_scope(review_tasks_for(user), pk=pk)


def queue_counts(user) -> dict[str, int]:
    rows = review_tasks_for(user).open().values("lane").annotate(n=Count("id"))
    counts = {lane: 0 for lane in (Lane.BLOCKING_REVIEW, Lane.ASYNC_REVIEW)}
    counts.update({row["lane"]: row["n"] for row in rows})
    return counts


def submission_still_open(submission: Submission) -> bool:
    """Can anything still change what the submitter sees? (An auto-approved draft drawn for
    the audit sample is approved, but its reviewer may still retract it.)"""
    return not submission.is_terminal or submission.review_tasks.open().exists()


def blocking_review_due(submission: Submission):
    """When the open blocking review of this submission is due (the earliest, if two), or None."""
    return (submission.review_tasks.open().filter(lane=Lane.BLOCKING_REVIEW).order_by("due_at")
            .values_list("due_at", flat=True).first())


def decisions_for_submission(submission: Submission) -> QuerySet[ReviewTask]:
    """The closed reviews of one submission, oldest first (the caller has scoped it)."""
    return submission.review_tasks.decided().select_related("decided_by").order_by("decided_at")


def audit_events_for_submission(user, submission: Submission) -> QuerySet[AuditEvent]:
    """The audit trail of one submission (the caller has already scoped the submission)."""
    task_ids = [str(pk) for pk in submission.review_tasks.values_list("pk", flat=True)]
    draft_ids = [str(pk) for pk in submission.drafts.values_list("pk", flat=True)]
    return AuditEvent.objects.filter(
        Q(object_type="submission", object_id=str(submission.pk))
        | Q(object_type="reviewtask", object_id__in=task_ids)
        | Q(object_type="draft", object_id__in=draft_ids)
    ).order_by("id")


def audit_events_for(user) -> QuerySet[AuditEvent]:
    if not has_role(user, COMPLIANCE):
        return AuditEvent.objects.none()
    return AuditEvent.objects.select_related("workflow_version__workflow").order_by("-id")


def audit_export_jobs_for(user) -> QuerySet[AuditExportJob]:
    """A compliance officer's own export jobs, newest first.

    Own jobs only (docs/ARCHITECTURE.md "Export jobs"): every officer may export the same rows
    anyway, so nothing is hidden by it, while a file prepared at one officer's request is only
    ever handed to that officer, and each download names who asked for it. Every export and
    download is in the audit trail, which all compliance officers read.
    """
    if not has_role(user, COMPLIANCE):
        return AuditExportJob.objects.none()
    return AuditExportJob.objects.filter(requested_by=user).order_by("-id")


def audit_export_job_for(user, pk: int) -> AuditExportJob:
    return get_in_scope(audit_export_jobs_for(user), pk=pk)


def stalled_generation_ids(*, limit: int = 500) -> list[int]:
    """Submissions whose generation task was lost: never picked up after the grace period,
    or claimed by a worker that has not finished within the stale limit. System-wide: only
    the periodic sweep calls this."""
    now = timezone.now()
    waiting_since = now - timedelta(seconds=settings.REVIEWDESK_ENQUEUE_GRACE_SECONDS)
    stale_before = now - timedelta(seconds=settings.REVIEWDESK_GENERATION_STALE_SECONDS)
    stalled = Submission.objects.stalled(waiting_since=waiting_since, stale_before=stale_before)
    return list(stalled.order_by("updated_at").values_list("pk", flat=True)[:limit])


def failed_generations_to_retry(*, limit: int = 200) -> list[int]:
    """Failed for want of a provider, failed long enough ago, and with a model whose circuit
    is closed (or half-open: the retry is the trial call). System-wide: for the periodic task."""
    from .pipeline.engines import model_available
    from .pipeline.run import model_chain

    failed_before = timezone.now() - timedelta(seconds=settings.REVIEWDESK_AUTO_RETRY_SECONDS)
    candidates = (
        Submission.objects.failed_retryable()
        .filter(updated_at__lt=failed_before)
        .select_related("workflow_version")
        .order_by("updated_at")[:limit]
    )
    available: dict[str, bool] = {}  # one circuit lookup (Redis round trips) per model, not per submission

    def ready(model: str) -> bool:
        if model not in available:
            available[model] = model_available(model)
        return available[model]

    return [s.pk for s in candidates if any(ready(m) for m in model_chain(s.workflow_version.spec))]


def calls_for_draft(draft) -> QuerySet[LLMCall]:
    """Every model request of the attempt that made this draft (the caller scoped the draft)."""
    if draft is None:
        return LLMCall.objects.none()
    return LLMCall.objects.filter(submission_id=draft.submission_id, attempt=draft.attempt).order_by("id")


def submission_cost(submission: Submission) -> dict:
    """Every model call of one submission, all attempts (draft, retries, repair, QA, cascade,
    failures): requests, tokens and cost. The caller has scoped the submission."""
    totals = submission.llm_calls.aggregate(
        requests=Count("id"), prompt_tokens=Sum("prompt_tokens"), completion_tokens=Sum("completion_tokens"),
        cost_usd=Sum("cost_usd"),
    )
    return {key: value or 0 for key, value in totals.items()}


# --- evidence per submission ---------------------------------------------------------------


@dataclass
class Evidence:
    """Everything that decided one submission, as one viewer may see it.

    ``full`` is the submission page's ``can_see_drafts``: the submitter of a submission (unless
    they are compliance) sees their input, the released output and the decisions in plain
    words, never drafts, model calls, provider text, reviewers' words or the events' details.
    """

    submission: Submission
    viewer: object
    full: bool
    generated_at: object
    inputs: list[dict] = field(default_factory=list)
    drafts: list = field(default_factory=list)
    calls: list = field(default_factory=list)
    cost: dict | None = None
    decisions: list = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    events: list = field(default_factory=list)


def may_see_drafts(user, submission: Submission) -> bool:
    """The submission page's rule (views.pages._submission_page): drafts, calls and provider
    text are for everyone in scope except the submitter, unless the submitter is compliance."""
    return submission.submitted_by_id != user.pk or has_role(user, COMPLIANCE)


def evidence_for(user, submission: Submission) -> Evidence:
    """The evidence bundle of one submission (the caller has scoped it with submission_for).

    A fixed number of queries however many attempts, calls, reviews and history rows there
    are: each kind of row is read once for the whole submission and grouped here.
    """
    from .models import Draft

    full = may_see_drafts(user, submission)
    evidence = Evidence(submission=submission, viewer=user, full=full, generated_at=timezone.now())
    evidence.inputs = [
        {"name": f.name, "label": f.label, "value": submission.data.get(f.name)}
        for f in submission.workflow_version.spec.form.all_fields()
    ]
    evidence.decisions = list(decisions_for_submission(submission).select_related("draft"))
    evidence.history = _history_rows(submission, full=full)
    evidence.events = list(audit_events_for_submission(user, submission))
    if not full:
        return evidence
    evidence.calls = list(submission.llm_calls.order_by("attempt", "id"))
    evidence.drafts = list(Draft.objects.filter(submission=submission).order_by("attempt"))
    for draft in evidence.drafts:
        draft.evidence_calls = [c for c in evidence.calls if c.attempt == draft.attempt]
    evidence.cost = {
        "requests": len(evidence.calls),
        "prompt_tokens": sum(c.prompt_tokens for c in evidence.calls),
        "completion_tokens": sum(c.completion_tokens for c in evidence.calls),
        "cost_usd": sum((c.cost_usd for c in evidence.calls), Decimal(0)),
    }
    return evidence


def _history_rows(submission: Submission, *, full: bool) -> list[dict]:
    """simple-history rows of the submission (and, for those who see drafts, of its drafts and
    review tasks), oldest first, each with the fields that changed since that object's previous
    row. The submitter gets the names of the changed fields, not their values: a value may be
    a draft, a provider's error text or a reviewer's words."""
    from .models import Draft

    sources = [("submission", Submission, {"id": submission.pk})]
    if full:
        sources += [("draft", Draft, {"submission_id": submission.pk}),
                    ("reviewtask", ReviewTask, {"submission_id": submission.pk})]
    rows = []
    for object_type, model, filters in sources:
        # The fields the history tracks (a heartbeat, say, is kept out of it: models.py).
        tracked = {f.attname for f in model.history.model._meta.concrete_fields}
        names = [f.attname for f in model._meta.concrete_fields if f.attname in tracked]
        history = model.history.filter(**filters).select_related("history_user").order_by("history_date", "history_id")
        previous: dict[int, dict] = {}
        for row in history:
            values = {name: getattr(row, name) for name in names}
            before = previous.get(row.id)
            changed = [name for name in names if before is None or before[name] != values[name]]
            previous[row.id] = values
            rows.append({
                "object_type": object_type,
                "object_id": row.id,
                "history_id": row.history_id,
                "time": row.history_date,
                "user": row.history_user.get_username() if row.history_user else "",
                "type": {"+": "created", "~": "changed", "-": "deleted"}.get(row.history_type, row.history_type),
                "change_reason": row.history_change_reason or "",
                "changed_fields": changed,
                "changes": ({name: {"from": before[name] if before else None, "to": values[name]} for name in changed}
                            if full else None),
            })
    rows.sort(key=lambda r: (r["time"], r["object_type"], r["history_id"]))
    return rows


def daily_volume(workflow: Workflow, *, days: int = 30) -> float:
    """Submissions a day over the last `days` days (or since the first one, if later): the
    volume calibration's what-if and the eval's cost projection work from."""
    now = timezone.now()
    recent = Submission.objects.filter(workflow_version__workflow=workflow, created_at__gte=now - timedelta(days=days))
    first = recent.order_by("created_at").values_list("created_at", flat=True).first()
    if first is None:
        return 0.0
    return recent.count() / max((now - first).total_seconds() / 86400, 1.0)


# --- the review queue (docs/ARCHITECTURE.md "Review queue") ---------------------------------

# Tabs of the queue: the two review lanes, and the audit sample (auto-approved drafts drawn for
# an after-the-fact review; they sit in the async lane with sampled=True and are kept out of
# its tab, so bulk confirm never sweeps them up).
QUEUE_TABS = {
    # (sampled=False is always so in the blocking lane; saying it lets the tab use its index range.)
    Lane.BLOCKING_REVIEW: ("Blocking review", Q(lane=Lane.BLOCKING_REVIEW, sampled=False)),
    Lane.ASYNC_REVIEW: ("Async review", Q(lane=Lane.ASYNC_REVIEW, sampled=False)),
    "audit_sample": ("Audit sample", Q(lane=Lane.ASYNC_REVIEW, sampled=True)),
}
QUEUE_AGES = {"1h": timedelta(hours=1), "4h": timedelta(hours=4), "1d": timedelta(days=1), "7d": timedelta(days=7)}
# Counts stop here ("99+"): a count is a LIMITed index walk (at most 100 rows a tab), never a
# scan of every open task. Past a hundred the number changes nothing a reviewer does.
QUEUE_COUNT_CAP = 99
# The columns a queue row shows; the wide ones (Draft.content, parsed, score_components,
# earlier_attempts, Submission.data, ...) are never read or decoded for a list.
QUEUE_ROW_FIELDS = (
    "id", "submission_id", "draft_id", "lane", "sampled", "state", "claimed_by_id", "lease_expires_at", "due_at",
    "priority", "finding_codes", "approvals_required", "approvals_given", "created_at", "overdue_at", "escalated_at",
)


@dataclass(frozen=True)
class QueueFilters:
    """The queue's filters after validation; ``notices`` says what was ignored and why."""

    tab: str = Lane.BLOCKING_REVIEW
    workflow: str = ""
    age: str = ""
    finding: str = ""
    notices: tuple[str, ...] = ()
    # The chosen workflow's version ids, when queue_filters resolved them (see queue_scope).
    workflow_versions: tuple[int, ...] = ()

    def q(self, *, with_tab: bool = True) -> Q:
        q = QUEUE_TABS[self.tab][1] if with_tab else Q()
        if self.workflow and self.workflow_versions:
            # A list of ids, as queue_scope matches workflows (its comment says why).
            q &= Q(submission__workflow_version_id__in=self.workflow_versions)
        elif self.workflow:
            q &= Q(submission__workflow_version__workflow__slug=self.workflow)
        if self.age:
            q &= Q(created_at__lte=timezone.now() - QUEUE_AGES[self.age])
        if self.finding == "none":
            q &= Q(finding_codes="")
        elif self.finding == "any":
            q &= ~Q(finding_codes="")
        elif self.finding:
            # "Has findings" is implied by the code, and spelled out for the planner: it cannot
            # tell from a LIKE that the partial index reviewtask_open_findings covers the rows.
            q &= ~Q(finding_codes="") & Q(finding_codes__contains=f" {self.finding} ")
        return q

    def as_query(self) -> dict[str, str]:
        return {k: v for k, v in (("lane", self.tab), ("workflow", self.workflow), ("age", self.age),
                                  ("finding", self.finding)) if v}


def queue_filters(user, params) -> QueueFilters:
    """Read the queue's filters from a query string. A value that is not offered is ignored
    with a notice (a stale link still shows the queue, never an error page)."""
    from .vocab import Finding

    notices = []
    tab = params.get("lane") or Lane.BLOCKING_REVIEW
    if tab not in QUEUE_TABS:
        notices.append(f"There is no lane “{tab[:40]}”; showing the blocking lane.")
        tab = Lane.BLOCKING_REVIEW
    workflow = params.get("workflow") or ""
    versions = {slug: ids for _, slug, _, ids in _reviewer_workflows(user)} if has_role(user, REVIEWER) else {}
    if workflow and workflow not in versions:
        notices.append(f"You review no workflow “{workflow[:80]}”; showing all of yours.")
        workflow = ""
    age = params.get("age") or ""
    if age and age not in QUEUE_AGES:
        notices.append(f"“{age[:20]}” is not an age this queue offers; showing all ages.")
        age = ""
    finding = params.get("finding") or ""
    if finding and finding not in {"none", "any", *Finding}:
        notices.append(f"“{finding[:40]}” is not a finding; showing items with and without findings.")
        finding = ""
    return QueueFilters(tab=tab, workflow=workflow, age=age, finding=finding, notices=tuple(notices),
                        workflow_versions=versions.get(workflow, ()))


def _reviewer_workflows(user) -> list[tuple[int, str, str, tuple[int, ...]]]:
    """(id, slug, name, version ids) of the workflows this reviewer reviews, by name.

    One statement a request: kept on the user object (a request's own), read by the queue's
    scope, its workflow filter and the filter's choices. A long-lived user object would keep
    versions published after the first read out of its queue; none lives longer than a request.
    """
    cached = getattr(user, "_queue_workflows", None)
    if cached is None:
        rows = (Workflow.objects.filter(reviewer_groups__in=group_ids(user)).distinct()
                .order_by("name", "pk", "versions__pk").values_list("pk", "slug", "name", "versions__pk"))
        workflows: dict[int, tuple[str, str, list[int]]] = {}
        for pk, slug, name, version in rows:
            versions = workflows.setdefault(pk, (slug, name, []))[2]
            if version is not None:
                versions.append(version)
        cached = user._queue_workflows = [(pk, slug, name, tuple(v)) for pk, (slug, name, v) in workflows.items()]
    return cached


def queue_workflows(user) -> list[tuple[str, str]]:
    """(slug, name) of the workflows this reviewer reviews: the workflow filter's choices."""
    if not has_role(user, REVIEWER):
        return []
    return [(slug, name) for _, slug, name, _ in _reviewer_workflows(user)]


def queue_scope(user) -> QuerySet[ReviewTask]:
    """Open tasks this reviewer may work, without the joins a page of rows needs."""
    if not has_role(user, REVIEWER):
        return ReviewTask.objects.none()
    # The reviewer's workflows and groups as lists of ids, read once per request, so that the
    # page's statements and Next plan a plain IN list instead of a semi-join through the user's
    # groups (measured: planning was most of the cost). The workflows are matched by the ids
    # of their versions on the submission's own workflow_version_id, neither through a join to
    # workflow versions nor by a subquery on them: the planner then estimates from the
    # submissions' statistics how many open tasks match (at 100,000 tasks of one workflow: all
    # of them) instead of guessing a hundredth. With the guess it planned a parallel scan of
    # the queue's index for the first page (6-9 ms to run instead of about 1), and with the
    # workflow filter, a hash join and a sort of all 70,000 rows of the tab (0.3-0.8 s, not 1 ms).
    versions = [v for _, _, _, ids in _reviewer_workflows(user) for v in ids]
    # Plus exactly the tasks escalated to one of the user's groups (review_tasks_for's rule).
    scope = Q(submission__workflow_version_id__in=versions) | Q(escalated_at__isnull=False,
                                                              escalated_to_id__in=group_ids(user))
    return ReviewTask.objects.open().filter(scope).exclude(submission__submitted_by=user)


QUEUE_ORDER = (F("due_at").asc(nulls_last=True), F("priority").desc(), F("id").asc())


def queue_tasks(user, filters: QueueFilters) -> QuerySet[ReviewTask]:
    """One tab of the queue in its order: due time first (overdue work on top), then priority,
    then age. The partial index reviewtask_open_queue serves this order.

    Each row carries what the list shows as plain values: ``workflow_name``, ``submitter_name``,
    ``claimer_name`` (None when free) and ``score``. The names are scalar subqueries, not
    select_related joins: the statement is planned at every request (no prepared statements),
    and planning a seven-table join was most of its cost (measured at 100,000 open tasks:
    planning 3.5-5.6 ms of a 6.3 ms statement; with three tables and the subqueries, 0.7 ms of
    2.1 ms); a subquery is planned alone, and run only for the page's 51 rows.
    """
    from django.contrib.auth import get_user_model

    User = get_user_model()
    return (
        queue_scope(user)
        .filter(filters.q())
        .only(*QUEUE_ROW_FIELDS)
        .annotate(
            score=F("draft__score"),
            workflow_name=Subquery(WorkflowVersion.objects.filter(pk=OuterRef("submission__workflow_version_id"))
                                   .values("workflow__name")[:1]),
            submitter_name=Subquery(User.objects.filter(pk=OuterRef("submission__submitted_by_id"))
                                    .values(User.USERNAME_FIELD)[:1]),
            claimer_name=Subquery(User.objects.filter(pk=OuterRef("claimed_by_id")).values(User.USERNAME_FIELD)[:1]),
        )
        .order_by(*QUEUE_ORDER)
    )


def queue_counts_capped(user, filters: QueueFilters) -> dict[str, int]:
    """Open tasks per tab under the other filters, each counted only up to QUEUE_COUNT_CAP + 1
    rows (a LIMITed subquery), so a poll costs the same at 100 or 100,000 open tasks."""
    base = queue_scope(user).filter(filters.q(with_tab=False))
    # One statement for the three tabs: each tab's LIMITed subquery as Django's own .count()
    # of a sliced queryset writes it, side by side in one SELECT (one round trip, not three).
    parts, params = [], []
    for _, q in QUEUE_TABS.values():
        try:
            sql, part_params = base.filter(q).order_by().values("pk")[: QUEUE_COUNT_CAP + 1].query.sql_with_params()
        except EmptyResultSet:  # no scope at all (.none()): nothing to count, no statement
            return dict.fromkeys(QUEUE_TABS, 0)
        parts.append(f"(SELECT COUNT(*) FROM ({sql}) AS capped)")
        params.extend(part_params)
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(parts), params)
        row = cursor.fetchone()
    return dict(zip(QUEUE_TABS, row, strict=True))


def queue_approved_by(user, task_ids) -> set[int]:
    """Which of these tasks this reviewer has already given an approval that still counts."""
    from .models import ReviewApproval

    return set(ReviewApproval.objects.filter(task_id__in=list(task_ids), reviewer=user, superseded=False)
               .values_list("task_id", flat=True))


def current_approvers(task: ReviewTask) -> list:
    """The reviewers whose approvals count for the task's current text (the caller scoped it)."""
    from django.contrib.auth import get_user_model

    return list(get_user_model().objects.filter(pk__in=task.approvals.filter(superseded=False).values("reviewer_id"))
                .order_by("username"))
