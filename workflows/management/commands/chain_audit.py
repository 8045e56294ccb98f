from django.core.management.base import BaseCommand

from workflows.audit import chain_now, unchained


class Command(BaseCommand):
    help = (
        "Link the committed unchained audit events into the chain, in id order (what the chain_audit "
        "task does a moment after each commit, and beat every REVIEWDESK_AUDIT_CHAIN_SECONDS). Safe "
        "beside running chainers: only one links at a time; this one then returns at once."
    )

    def handle(self, *args, **options):
        linked = chain_now(timeout=3600)
        self.stdout.write(f"linked {linked} events; {unchained()}")
