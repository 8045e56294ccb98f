"""manage.py import_eval_cases WORKFLOW FILE [--dataset NAME]  |  import_eval_cases --demo

Adds (or replaces, by id) the cases of a JSON Lines file in a workflow's dataset; all or
nothing. --demo loads the bundled datasets of the three demo workflows (evals/datasets/)."""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from evals import services
from evals.expectations import CaseError
from workflows.models import Workflow

DEMO_DATASETS = Path(__file__).resolve().parents[2] / "datasets"


class Command(BaseCommand):
    help = "Import eval cases from JSON Lines into a workflow's dataset (or the demo datasets with --demo)."

    def add_arguments(self, parser):
        parser.add_argument("workflow", nargs="?", help="workflow slug")
        parser.add_argument("file", nargs="?", help="JSON Lines file")
        parser.add_argument("--dataset", default=services.DEFAULT_DATASET)
        parser.add_argument("--demo", action="store_true", help="import the bundled demo datasets")

    def handle(self, *args, workflow, file, dataset, demo, **options):
        if demo:
            pairs = [(path.stem, path) for path in sorted(DEMO_DATASETS.glob("*.jsonl"))]
        elif workflow and file:
            pairs = [(workflow, Path(file))]
        else:
            raise CommandError("give WORKFLOW and FILE, or --demo")
        for slug, path in pairs:
            found = Workflow.objects.filter(slug=slug).first()
            if found is None:
                raise CommandError(f"no workflow {slug!r} (run seed_demo or load_workflows first)")
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"{path}: {exc}") from None
            try:
                created, replaced = services.cases_import(dataset=services.dataset_for(found, dataset), text=text)
            except CaseError as exc:
                for key, reason in exc.errors:
                    self.stderr.write(f"{path}: {key}: {reason}")
                raise CommandError(f"{path}: refused; nothing was imported") from None
            self.stdout.write(f"{slug}/{dataset}: {created} cases added, {replaced} replaced")
