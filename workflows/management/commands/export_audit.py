"""Write the audit trail (or a filtered part) to FILE and its manifest to FILE.manifest.json."""
from django.core.management.base import BaseCommand, CommandError

from workflows.audit_export import FORMATS, Export, ExportFilterForm, ExportFilters, record_export, write_export


class Command(BaseCommand):
    help = (
        "Export audit events as CSV or JSON Lines to FILE, with FILE.manifest.json (row count, SHA-256, "
        "first/last hash, chain head). Check the pair offline with tools/verify_export.py. The export is "
        "itself recorded as an audit.exported event."
    )

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=FORMATS, required=True)
        parser.add_argument("--output", required=True, metavar="FILE")
        parser.add_argument("--since", default="", help="events at or after this time (ISO 8601; UTC if no offset)")
        parser.add_argument("--until", default="", help="events before this time (exclusive)")
        parser.add_argument("--workflow", default="", metavar="SLUG")
        parser.add_argument("--actor", default="", metavar="USERNAME")
        parser.add_argument("--action", default="", metavar="ACTION")
        parser.add_argument("--submission", default="", metavar="ID")

    def handle(self, *args, **options):
        form = ExportFilterForm({name: options[name] for name in
                                 ("since", "until", "workflow", "actor", "action", "submission")})
        if not form.is_valid():
            problems = "; ".join(f"--{name}: {' '.join(errors)}" if name != "__all__" else " ".join(errors)
                                 for name, errors in form.errors.items())
            raise CommandError(problems)
        export = Export(options["format"], ExportFilters.from_cleaned(form.cleaned_data))
        manifest = write_export(options["output"], export, exported_by="manage.py export_audit")
        record_export(export, channel="command")
        self.stdout.write(
            f"wrote {manifest['row_count']} events (up to #{export.upto}) to {options['output']} "
            f"sha256 {manifest['file_sha256']}; manifest {options['output']}.manifest.json"
        )
