from django.core.management.base import BaseCommand, CommandError

from workflows.audit_chain import AnchorError, anchor_head


class Command(BaseCommand):
    help = (
        "Verify the audit chain since the last checkpoint and write its head, signed, outside the "
        "database (REVIEWDESK_AUDIT_ANCHOR_DIR, one new file per anchor; needs REVIEWDESK_AUDIT_ANCHOR_KEY)."
    )

    def handle(self, *args, **options):
        try:
            anchor = anchor_head()
        except AnchorError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"anchored event {anchor.event_id} ({anchor.count} events, hash {anchor.hash}) "
                          f"to {anchor.location}")
