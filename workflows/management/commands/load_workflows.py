"""manage.py load_workflows PATH... [--publish [--reason R] [--override R]]

Validates workflow definition YAML files and saves each changed one as a candidate version;
with --publish, publishes it through the same eval gate as the app (evaluating the candidate,
and the current version for comparison, here and now when they have not been). A refused
publish leaves the candidate and fails the command unless --override gives a reason.
"""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from workflows.definitions import DefinitionError, parse_yaml
from workflows.services import PublishRefused, version_candidate, version_publish


class Command(BaseCommand):
    help = "Validate workflow YAML files; save each changed one as a candidate, and publish it with --publish."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="YAML files, or folders of *.yaml files")
        parser.add_argument("--publish", action="store_true", help="publish each candidate through the eval gate")
        parser.add_argument("--reason", default="", help="why (recorded with each publication)")
        parser.add_argument("--override", default="", help="publish even if the gate refuses, for this reason (audited)")

    def handle(self, *args, paths, publish, reason, override, **options):
        files: list[Path] = []
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                files.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
            elif path.is_file():
                files.append(path)
            else:
                raise CommandError(f"{raw}: no such file or folder")
        failed = refused = 0
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                # A file saved in another encoding is bad input like any other, not a crash.
                failed += 1
                self.stderr.write(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})")
                continue
            try:
                version, created = version_candidate(spec=parse_yaml(text), source_yaml=text)
            except DefinitionError as exc:
                failed += 1
                for key, why in exc.errors:
                    self.stderr.write(f"{path}: {key}: {why}")
                continue
            slug = version.workflow.slug
            if not version.is_candidate:
                self.stdout.write(f"{path}: {slug} v{version.number} unchanged")
                continue
            if not publish:
                self.stdout.write(f"{path}: {slug} v{version.number} candidate{'' if created else ' (unchanged)'}")
                continue
            try:
                version_publish(version_id=version.pk, reason=reason, override=override, run_missing=True)
            except PublishRefused as exc:
                refused += 1
                for why in exc.reasons:
                    self.stderr.write(f"{path}: {slug} v{version.number} refused: {why}")
                continue
            self.stdout.write(f"{path}: {slug} v{version.number} published{' (gate overridden)' if override else ''}")
        if failed:
            raise CommandError(f"{failed} definition(s) refused; nothing was saved for them.")
        if refused:
            raise CommandError(f"{refused} candidate(s) not published: the gate refused (see above); "
                               f"--override REASON publishes anyway, recorded in the audit trail.")
