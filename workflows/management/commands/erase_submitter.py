from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from workflows import services
from workflows.audit import verify_chain
from workflows.models import DomainError


class Command(BaseCommand):
    help = (
        "Erase the personal data of every submission of one person (an erasure request): form "
        "data, drafts, reviewer texts and their history. Leaves a tombstone; refused if a legal "
        "hold applies. The audit chain is not touched and is verified afterwards."
    )

    def add_arguments(self, parser):
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--username")
        who.add_argument("--user-id", type=int)
        parser.add_argument("--request-ref", default="", help="your reference for the request (a ticket number); only its hash is logged")
        parser.add_argument("--by", default="", help="username of the compliance officer acting (default: system)")

    def handle(self, *args, **options):
        users = get_user_model().objects
        if options["username"]:
            user = users.filter(username=options["username"]).first()
            if user is None:
                raise CommandError(f"No user named {options['username']!r}.")
            user_id = user.pk
        else:
            user_id = options["user_id"]
        actor = None
        if options["by"]:
            actor = users.filter(username=options["by"]).first()
            if actor is None:
                raise CommandError(f"No user named {options['by']!r} (--by).")
        try:
            ids = services.erase_submissions_of(user_id=user_id, actor=actor, request_ref=options["request_ref"])
        except DomainError as exc:
            raise CommandError(str(exc)) from None
        report = verify_chain()
        self.stdout.write(f"erased {len(ids)} submission(s){': ' + ', '.join(map(str, ids)) if ids else ''}")
        if not report.ok:
            raise CommandError(f"audit chain broken at event {report.broken_at}: {report.reason}")
        self.stdout.write(f"audit chain ok: {report.checked} events")
