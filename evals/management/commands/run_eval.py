"""manage.py run_eval WORKFLOW [--version N] [--dataset NAME] [--fail-under RATE]

Runs a workflow version over a dataset through the drafting pipeline, cases in parallel on the
Celery llm queue (or in this process with --in-process, for a machine without a worker), and
prints the number of cases and the pass rate. Exits non-zero only below --fail-under.
"""
from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from evals import services
from evals.models import Dataset, EvalRun, RunState
from evals.summary import summarise
from workflows.models import DomainError, Workflow


def rate(text: str) -> float:
    """0.9 or 90%."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise CommandError(f"--fail-under {text!r}: give a rate such as 0.9 or 90%") from None
    if not 0 <= value <= 1:
        raise CommandError(f"--fail-under {text!r}: a rate is between 0 and 1 (or 0% and 100%)")
    return value


class Command(BaseCommand):
    help = "Run a workflow version's eval dataset through the pipeline and print the pass rate."

    def add_base_argument(self, parser, *args, **kwargs):
        # --version is this command's workflow version (issue 6's interface), not Django's.
        if "--version" not in args:
            super().add_base_argument(parser, *args, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("workflow", help="workflow slug")
        parser.add_argument("--version", type=int, help="version number (default: the current one)")
        parser.add_argument("--dataset", default=services.DEFAULT_DATASET, help="dataset name (default: %(default)s)")
        parser.add_argument("--fail-under", type=rate, help="exit non-zero when the pass rate is below this")
        parser.add_argument("--in-process", action="store_true", help="run the cases here, not on the Celery workers")
        parser.add_argument("--threads", type=int, default=8, help="cases at once with --in-process")
        parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the workers")

    def handle(self, *args, workflow, version, dataset, fail_under, in_process, threads, timeout, **options):
        found = Workflow.objects.filter(slug=workflow).first()
        if found is None:
            raise CommandError(f"no workflow {workflow!r}")
        versions = found.versions.all()
        chosen = versions.filter(number=version).first() if version else found.current_version
        if chosen is None:
            raise CommandError(f"{workflow} has no version {version}" if version else f"{workflow} has no version yet")
        data = Dataset.objects.filter(workflow=found, name=dataset).first()
        if data is None:
            raise CommandError(f"{workflow} has no dataset {dataset!r}")
        try:
            run = services.eval_run_start(version=chosen, dataset=data) if not in_process else None
        except DomainError as exc:
            raise CommandError(str(exc)) from None
        if in_process:
            try:
                run = services.eval_run_here(chosen, data, threads=threads)
            except DomainError as exc:
                raise CommandError(str(exc)) from None
        else:
            self._wait(run, timeout)
        if run.state == RunState.FAILED:
            raise CommandError(f"eval run #{run.pk} failed after {run.completed} of {run.total} cases: {run.failure_reason}")
        summary = summarise(run)
        self.stdout.write(
            f"{workflow} v{chosen.number} over {dataset}: {summary.cases} cases, {summary.passed} passed, "
            f"pass rate {summary.pass_rate:.1%}, schema valid {summary.schema_valid_rate:.1%}, "
            f"lanes {summary.lane_mix}, ${summary.cost_per_case:.6f} a case, "
            f"latency p50 {summary.latency_p50_ms:.0f} ms p95 {summary.latency_p95_ms:.0f} ms (run #{run.pk})"
        )
        if fail_under is not None and summary.pass_rate < fail_under:
            raise CommandError(f"pass rate {summary.pass_rate:.1%} is below --fail-under {fail_under:.1%}")

    def _wait(self, run: EvalRun, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = -1
        while True:
            run.refresh_from_db()
            if run.completed != last:
                self.stderr.write(f"{run.completed}/{run.total} cases done")
                last = run.completed
            if run.state != RunState.RUNNING:
                return  # done, or failed (the caller says why)
            if time.monotonic() > deadline:
                raise CommandError(f"{run.completed} of {run.total} cases done after {timeout:g} s: is a worker "
                                   f"consuming the llm queue? (or use --in-process)")
            time.sleep(0.5)
