"""Every write of the evals app: datasets and cases, and eval runs with their results."""
from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from typing import Any

from celery import current_app
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Max, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from workflows import audit
from workflows.models import Decision, DomainError, ReviewState, ReviewTask, Workflow, WorkflowVersion
from workflows.roles import WORKFLOW_ADMIN, has_role, system_user
from workflows.vocab import AuditAction

from .expectations import CaseError, Outcome, check, judge_failures, parse_expectations
from .jsonl import read_cases
from .judge import trusted as judge_trusted
from .models import Case, CaseResult, Dataset, EvalRun, Provenance, RunPurpose, RunState
from .runner import evaluate

log = logging.getLogger(__name__)

RUN_EVAL_CASE = "evals.tasks.run_eval_case"
DEFAULT_DATASET = "default"


def dataset_for(workflow: Workflow, name: str = DEFAULT_DATASET) -> Dataset:
    dataset, _ = Dataset.objects.get_or_create(workflow=workflow, name=name)
    return dataset


@transaction.atomic
def cases_import(*, dataset: Dataset, text: str, actor=None, provenance: str = Provenance.IMPORTED) -> tuple[int, int]:
    """Add or replace cases from JSON Lines; all or nothing. Returns (created, replaced)."""
    lines = read_cases(text)
    created = replaced = 0
    for line in lines:
        _, was_created = Case.objects.update_or_create(
            dataset=dataset, key=line.key,
            defaults={"input": line.input, "expect": line.expect, "note": line.note, "provenance": provenance,
                      "created_by": actor if actor is not None and actor.is_authenticated else None},
        )
        created += was_created
        replaced += not was_created
    return created, replaced


def _output_expectations(spec, final: str) -> dict[str, Any]:
    """What a reviewed final pins down: for a JSON output, every value that is not free text
    (enums, numbers, booleans) must come out the same; free text is kept as the reference a
    reader compares with, since no model writes the same sentences twice."""
    if spec.output.format != "json":
        return {}
    try:
        parsed = json.loads(final)
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    properties = (spec.output.json_schema or {}).get("properties", {})
    fields = {}
    for name, value in parsed.items():
        schema = properties.get(name, {})
        if isinstance(value, str) and "enum" not in schema:
            continue
        if isinstance(value, (dict, list)):
            continue
        fields[name] = {"equals": value}
    return fields


@transaction.atomic
def case_from_review(*, task_id: int, user) -> Case:
    """One click on a decided review: the approved or edited final becomes the expected output,
    a rejected draft a "must not auto-approve" case. The row keeps who, from which submission
    and version, and whether the draft was captured as is or corrected."""
    task = ReviewTask.objects.select_related("submission__workflow_version__workflow", "draft").get(pk=task_id)
    if task.state != ReviewState.DONE:
        raise DomainError("Decide the review first; an open draft has no verdict to learn from.")
    submission = task.submission
    version = submission.workflow_version
    spec = version.spec
    if task.decision == Decision.APPROVE:
        provenance, final = Provenance.CAPTURED, task.draft.content
    elif task.decision == Decision.EDIT:
        provenance, final = Provenance.CORRECTED, task.edited_output
    else:
        provenance, final = Provenance.REJECTED, ""
    expect: dict[str, Any] = {"schema_valid": True}
    if spec.qa is not None:
        expect["rubric"] = spec.qa.rubric  # the workflow's own grading rubric: the judge's measure
    if provenance == Provenance.REJECTED:
        expect["must_not_auto_approve"] = True
    else:
        fields = _output_expectations(spec, final)
        if fields:
            expect["fields"] = fields
    parse_expectations(expect)  # what we build must be what an import would accept
    dataset = dataset_for(version.workflow)
    key = f"submission-{submission.pk}-task-{task.pk}"
    note = final if provenance != Provenance.REJECTED else f"Rejected: {task.get_reason_code_display() or 'sent back'}"
    try:
        with transaction.atomic():
            return Case.objects.create(
                dataset=dataset, key=key, input=submission.data, expect=expect, note=note[:5000],
                provenance=provenance, created_by=user, source_submission_id=submission.pk,
                source_version_number=version.number, reference_output=task.draft.content, reviewer_label=task.label,
            )
    except IntegrityError:
        raise DomainError("This decision is already a case in the dataset.") from None


def _send_case(run_id: int, case_id: int) -> None:
    try:
        current_app.send_task(RUN_EVAL_CASE, args=[run_id, case_id])
    except BrokerError:
        log.warning("broker unavailable; eval run %s case %s not sent", run_id, case_id)


@transaction.atomic
def eval_run_start(*, version: WorkflowVersion, dataset: Dataset, actor=None, cases=None,
                   purpose: str = RunPurpose.MANUAL) -> EvalRun:
    """Send every case of the dataset (or the given few: a dry run) to the workers."""
    if dataset.workflow_id != version.workflow_id:
        raise DomainError("That dataset belongs to another workflow.")
    case_ids = [c.pk for c in cases] if cases is not None else list(dataset.cases.values_list("pk", flat=True))
    if not case_ids:
        raise DomainError("The dataset has no cases yet.")
    if cases is not None:
        purpose = RunPurpose.DRY_RUN
    run = EvalRun.objects.create(version=version, dataset=dataset, total=len(case_ids), purpose=purpose,
                                 started_by=actor if actor is not None and actor.is_authenticated else None)
    for case_id in case_ids:
        transaction.on_commit(partial(_send_case, run.pk, case_id))
    return run


def eval_case_done(*, run: EvalRun, case: Case, outcome: Outcome, failures: list[str], result=None,
                   judged: list[str] = ()) -> CaseResult | None:
    """Store one case's result and count it, once: a redelivered task finds it stored."""
    calls = result.calls if result is not None else ()
    with transaction.atomic():
        try:
            with transaction.atomic():
                stored = CaseResult.objects.create(
                    run=run, case=case, passed=not failures, failures=failures, content=outcome.content[:50_000],
                    schema_valid=outcome.schema_valid, lane=outcome.lane, score=outcome.score if outcome.lane else None,
                    findings=list(outcome.findings), model=getattr(result, "model", "") or "",
                    prompt_tokens=sum(c.prompt_tokens for c in calls),
                    completion_tokens=sum(c.completion_tokens for c in calls),
                    cost_usd=outcome.cost_usd, latency_ms=outcome.latency_ms,
                    judge_grade=outcome.judge_grade, judge_failures=list(judged),
                )
        except IntegrityError:
            return None
        EvalRun.objects.filter(pk=run.pk).update(completed=F("completed") + 1, passed=F("passed") + (0 if failures else 1))
        closed = EvalRun.objects.filter(pk=run.pk, state=RunState.RUNNING, completed__gte=F("total")).update(
            state=RunState.DONE, finished_at=timezone.now()
        )
        if closed and run.purpose == RunPurpose.DRIFT:
            # Exactly one call closes a run (the conditional UPDATE), so one check per drift run.
            transaction.on_commit(partial(drift_compare, run.pk))
    return stored


# How many times the sweep re-sends a stalled run's missing cases before it fails the run. Each
# re-send costs up to one model call per missing case, and follows a whole stall period without a
# finished case. A worker lost to a deploy or a dead node is rare; cases that take their worker
# down three times running (an input that exhausts memory, a crash in a library) will do it a
# fourth time, and the run is better failed with a reason than re-sent for ever.
EVAL_RESENDS = 3


def eval_run_fail(*, run_id: int, reason: str) -> bool:
    """Stop a running run for good, saying why (its page, and the publish gate, show the reason).
    One conditional UPDATE: False when the run had finished or failed already, so a run closes
    once, as done or as failed. Cases still queued find it failed and do nothing."""
    failed = EvalRun.objects.filter(pk=run_id, state=RunState.RUNNING).update(
        state=RunState.FAILED, finished_at=timezone.now(), failure_reason=reason[:500])
    if failed:
        log.error("eval run %s failed: %s", run_id, reason)
        if EvalRun.objects.filter(pk=run_id, purpose=RunPurpose.DRIFT).exists():
            # Nobody watches a scheduled check's page: a drift check that could not run would
            # otherwise read as "no drift" until someone looked.
            transaction.on_commit(partial(_drift_run_failed, run_id))
    return bool(failed)


def _drift_run_failed(run_id: int) -> None:
    run = EvalRun.objects.select_related("version__workflow", "dataset").get(pk=run_id)
    workflow = run.version.workflow
    _mail_workflow_admins(
        f"ReviewDesk: the eval drift check on {workflow.name} could not run",
        f"The scheduled drift check of {workflow.name} v{run.version.number} on {run.dataset.name} stopped: "
        f"{run.failure_reason}. Until a check finishes, a change in the model behind it would go unnoticed; "
        f"start one by hand from the workflow's evaluation page once the cause is fixed.\n\nRun #{run.pk}.",
        about=f"the failed drift check on {workflow.slug}")


def _mail_workflow_admins(subject: str, body: str, *, about: str) -> None:
    """Tell every active workflow admin with an address; a mail server that is down is logged
    (what the mail is about is recorded elsewhere)."""
    admins = get_user_model().objects.filter(is_active=True, groups__name=WORKFLOW_ADMIN).exclude(email="")
    recipients = sorted(set(admins.values_list("email", flat=True)))
    if recipients:
        try:
            send_mail(subject, body, None, recipients)
        except Exception:
            log.exception("could not e-mail %s about %s", recipients, about)


def unexpected_error(case: Case, exc: BaseException) -> str:
    """A run's failure reason for an error outside the per-case checks (a model that does not
    answer is a failed case, not this): a fault that sending the case again would repeat."""
    first_line = (str(exc).strip().splitlines() or [""])[0]  # the traceback and details are in the log
    return f"case {case.key} stopped with an unexpected error ({type(exc).__name__}: {first_line})"


def stalled_eval_runs(now=None) -> list[EvalRun]:
    """Running eval runs with no case finished (and no re-send) for REVIEWDESK_EVAL_STALL_SECONDS.

    An eval case has no claim or heartbeat: it is one acks_late task per case, and a worker
    killed in the middle of one leaves its message unacknowledged in Redis until the broker's
    visibility timeout (an hour) hands it out again. Until then the run shows "running". The
    default stall limit is the task's hard time limit plus a minute: by then no live worker can
    still be inside one of the run's cases, so whatever has not finished was lost (or is still
    queued, which a re-send cannot hurt: the result is stored once per case and run). The clock
    starts again at each re-send, so re-sent cases get the same time as the first ones."""
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.REVIEWDESK_EVAL_STALL_SECONDS)
    runs = (EvalRun.objects.filter(state=RunState.RUNNING, started_at__lt=stale_before)
            .filter(Q(resent_at__isnull=True) | Q(resent_at__lt=stale_before))
            .annotate(last_result_at=Max("results__created_at")))
    return [r for r in runs if r.last_result_at is None or r.last_result_at < stale_before]


def missing_cases(run: EvalRun) -> list[int] | None:
    """The ids of the run's cases without a result, or None when they cannot be told: the run's
    cases are not stored, only their number, so they are taken to be the dataset's cases as of
    the run's start, which holds for every run but a dry run of chosen cases (or a dataset
    edited since the run began): then the counts disagree and None is returned."""
    cases = list(run.dataset.cases.filter(created_at__lte=run.started_at).values_list("pk", flat=True))
    if len(cases) != run.total:
        return None
    done = set(run.results.values_list("case_id", flat=True))
    return [pk for pk in cases if pk not in done]


def eval_runs_sweep(now=None) -> dict[str, int]:
    """Periodic (evals.tasks.sweep_stalled_eval_runs): re-send the missing cases of each stalled
    run, at most EVAL_RESENDS times per run. A run still stalled after that, or whose missing
    cases cannot be told, is failed with the reason: it would otherwise show "running" for ever.
    Safe to run twice at once: each re-send is claimed with one conditional UPDATE."""
    now = now or timezone.now()
    resent = failed = 0
    for run in stalled_eval_runs(now):
        missing = missing_cases(run)
        if missing is None:
            reason = ("its worker stopped, and the cases it had left cannot be identified (a dry run, or a "
                      "dataset changed since the run began), so they were not sent again")
        elif run.resends >= EVAL_RESENDS:
            reason = (f"no case finished, even after the missing cases were sent again {run.resends} times "
                      f"(a worker keeps stopping inside them)")
        else:
            claimed = EvalRun.objects.filter(pk=run.pk, state=RunState.RUNNING, resends=run.resends).update(
                resends=F("resends") + 1, resent_at=now)
            if claimed:
                for case_id in missing:
                    _send_case(run.pk, case_id)
                resent += len(missing)
                log.warning("eval run %s stalled at %s of %s cases: re-sent %d (try %d of %d)", run.pk, run.completed,
                            run.total, len(missing), run.resends + 1, EVAL_RESENDS)
            continue
        failed += eval_run_fail(run_id=run.pk, reason=reason)
    return {"resent": resent, "failed": failed}


def may_run_again(user, run: EvalRun) -> bool:
    """Whether the run's page offers "Run again": a failed run of a whole dataset that still has
    cases, to a workflow admin (who alone may start runs). A failed dry run is tried again from
    the versions page, where its case is chosen: the run does not record which one it was."""
    return (run.state == RunState.FAILED and run.purpose != RunPurpose.DRY_RUN and has_role(user, WORKFLOW_ADMIN)
            and run.dataset.cases.exists())


def drift_start_all() -> list[EvalRun]:
    """Re-run each current version's gate dataset: a provider may change a model under the same
    name, and the same version then answers differently (periodic, evals.tasks.drift_check)."""
    runs = []
    for workflow in Workflow.objects.filter(versions__published_at__isnull=False).distinct():
        version = workflow.current_version
        dataset = Dataset.objects.filter(workflow=workflow, name=DEFAULT_DATASET).first()
        if version is None or dataset is None or not dataset.cases.exists():
            continue
        if EvalRun.objects.filter(version=version, dataset=dataset, purpose=RunPurpose.DRIFT, state=RunState.RUNNING).exists():
            continue  # the last check is still running: one at a time
        runs.append(eval_run_start(version=version, dataset=dataset, purpose=RunPurpose.DRIFT))
    return runs


def drift_compare(run_id: int) -> str:
    """A finished drift run against the previous finished run of the same version and dataset:
    a pass-rate drop beyond the margin is recorded and the workflow admins are told."""
    run = EvalRun.objects.select_related("version__workflow", "dataset").get(pk=run_id)
    previous = (EvalRun.objects.filter(version=run.version, dataset=run.dataset, state=RunState.DONE, total__gt=1)
                .exclude(pk=run.pk).filter(finished_at__lte=run.finished_at).order_by("-finished_at").first())
    if previous is None or previous.pass_rate is None or run.pass_rate is None:
        return "no baseline"
    drop = previous.pass_rate - run.pass_rate
    if drop <= settings.REVIEWDESK_EVAL_MARGIN:
        return "steady"
    workflow = run.version.workflow
    message = (f"{workflow.name} v{run.version.number} now passes {run.pass_rate:.1%} of its eval cases on "
               f"{run.dataset.name}, against {previous.pass_rate:.1%} on {previous.finished_at:%Y-%m-%d %H:%M} UTC, with "
               f"the same definition: the model behind it probably changed.")
    with transaction.atomic():
        audit.record(action=AuditAction.EVAL_DRIFT_DETECTED, obj=run.version, actor=system_user(),
                     workflow_version=run.version,
                     payload={"run": run.pk, "previous_run": previous.pk, "pass_rate": run.pass_rate,
                              "previous_pass_rate": previous.pass_rate})
    _mail_workflow_admins(f"ReviewDesk: eval drift on {workflow.name}", message + f"\n\nRun #{run.pk}.",
                          about=f"drift on {workflow.slug}")
    return "drift"


def check_case(case: Case, outcome: Outcome, *, trust_judge: bool = False) -> tuple[list[str], list[str]]:
    """(failures that count, what the judge held against the draft). The judge's count only
    once its agreement with reviewers is shown (evals/judge.py)."""
    try:
        expect = parse_expectations(case.expect)
    except CaseError as exc:
        return [f"the case's expectations are invalid: {exc}"], []
    judged = judge_failures(expect, outcome)
    return check(expect, outcome) + (judged if trust_judge else []), judged


def rubric_of(case: Case) -> str | None:
    try:
        return parse_expectations(case.expect).rubric
    except CaseError:
        return None



def eval_run_here(version: WorkflowVersion, dataset: Dataset, *, threads: int = 8) -> EvalRun:
    """An eval run in this process, cases in threads (the command line and the publish gate of
    `load_workflows --publish`, where no page waits and a worker may not be up)."""
    cases = list(dataset.cases.all())
    if not cases:
        raise DomainError("The dataset has no cases yet.")
    run = EvalRun.objects.create(version=version, dataset=dataset, total=len(cases))
    spec = version.spec

    trust = judge_trusted(dataset)
    stopped = threading.Event()

    def one(case):
        if stopped.is_set():
            return  # the run failed: no more model calls for it
        try:
            outcome, result = evaluate(spec, case.input, rubric=rubric_of(case))
            failures, judged = check_case(case, outcome, trust_judge=trust)
            eval_case_done(run=run, case=case, outcome=outcome, failures=failures, result=result, judged=judged)
        except Exception as exc:
            # Nothing here would send the case again (no sweep waits on this process): the run
            # fails with the reason, and the caller sees a failed run, not a traceback.
            stopped.set()
            log.exception("eval run %s: case %s", run.pk, case.key)
            eval_run_fail(run_id=run.pk, reason=unexpected_error(case, exc))
        finally:
            connection.close()  # each thread has its own connection

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(pool.map(one, cases))
    run.refresh_from_db()
    return run
