from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from workflows import services
from workflows.models import DomainError, Submission, Workflow


class Command(BaseCommand):
    help = "Set or clear a legal hold on a workflow (--workflow SLUG) or a submission (--submission ID)."

    def add_arguments(self, parser):
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--workflow")
        target.add_argument("--submission", type=int)
        parser.add_argument("--clear", action="store_true")
        parser.add_argument("--reference", default="", help="the matter or ticket reference (required to set)")
        parser.add_argument("--by", default="", help="username of the person acting (default: system)")

    def handle(self, *args, **options):
        actor = None
        if options["by"]:
            actor = get_user_model().objects.filter(username=options["by"]).first()
            if actor is None:
                raise CommandError(f"No user named {options['by']!r} (--by).")
        try:
            workflow = Workflow.objects.get(slug=options["workflow"]) if options["workflow"] else None
            submission = Submission.objects.get(pk=options["submission"]) if options["submission"] else None
        except (Workflow.DoesNotExist, Submission.DoesNotExist):
            raise CommandError("No such workflow or submission.") from None
        try:
            target = services.legal_hold_set(actor=actor, reason_ref=options["reference"], workflow=workflow,
                                             submission=submission, hold=not options["clear"])
        except DomainError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{target._meta.model_name} {target.pk}: legal hold {'on' if target.legal_hold else 'off'}")
