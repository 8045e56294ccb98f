from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from workflows.definitions import DefinitionError
from workflows.services import workflow_publish_yaml


class Command(BaseCommand):
    help = "Validate workflow definition YAML files and publish each changed one as a new version."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="YAML files, or folders of *.yaml files")

    def handle(self, *args, paths, **options):
        files: list[Path] = []
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                files.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
            elif path.is_file():
                files.append(path)
            else:
                raise CommandError(f"{raw}: no such file or folder")
        failed = 0
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                # A file saved in another encoding is bad input like any other, not a crash.
                failed += 1
                self.stderr.write(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})")
                continue
            try:
                version, created = workflow_publish_yaml(text=text)
            except DefinitionError as exc:
                failed += 1
                for key, reason in exc.errors:
                    self.stderr.write(f"{path}: {key}: {reason}")
                continue
            state = "published" if created else "unchanged"
            self.stdout.write(f"{path}: {version.workflow.slug} v{version.number} {state}")
        if failed:
            raise CommandError(f"{failed} definition(s) refused; nothing was published for them.")
