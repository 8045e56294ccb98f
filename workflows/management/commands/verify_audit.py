from django.core.management.base import BaseCommand, CommandError

from workflows.audit import verify_chain


class Command(BaseCommand):
    help = "Walk the audit hash chain and name the first broken link."

    def handle(self, *args, **options):
        report = verify_chain()
        if not report.ok:
            raise CommandError(
                f"audit chain broken at event {report.broken_at}: {report.reason} "
                f"({report.checked} events before it verified)"
            )
        self.stdout.write(f"audit chain ok: {report.checked} events, head {report.head}")
