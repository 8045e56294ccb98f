from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from workflows.roles import COMPLIANCE, REVIEWER, SUBMITTER, WORKFLOW_ADMIN

DEMO_PASSWORD = "reviewdesk-demo"
OFFLINE_OVERRIDE = ("demo definitions shipped with the code; a case the offline engine cannot judge "
                    "(docs/ARCHITECTURE.md, hold rules) is left to a real model")
DEMO_WORKFLOWS = Path(__file__).resolve().parents[2] / "demo_workflows"
# username -> groups. The reviewer reviews all three demo workflows.
DEMO_USERS = {
    "submitter": [SUBMITTER],
    "reviewer": [REVIEWER, "support-reviewers", "compliance-reviewers", "underwriting-reviewers"],
    "compliance": [COMPLIANCE],
    "wfadmin": [WORKFLOW_ADMIN],
}


class Command(BaseCommand):
    help = f"Create one demo user per role (password {DEMO_PASSWORD!r}) and the three demo workflows. Idempotent."

    def handle(self, *args, **options):
        User = get_user_model()
        for role in (SUBMITTER, REVIEWER, COMPLIANCE, WORKFLOW_ADMIN):
            Group.objects.get_or_create(name=role)
        load = ("load_workflows", str(DEMO_WORKFLOWS), "--publish", "--reason", "demo workflows")
        try:
            call_command(*load, stdout=self.stdout, stderr=self.stderr)
        except CommandError as exc:
            # A database seeded before has the demo datasets, so a demo definition changed in
            # the code meets the publish gate, measured with the offline engine when no key is
            # set; a case only a real model can judge (compliance-report's cp-19, a
            # non-incident) refuses it there. These are the definitions shipped with the code:
            # publish them anyway, the refusal recorded (workflow.publish_overridden). A
            # definition that does not validate fails again below.
            self.stderr.write(f"{exc}; publishing the shipped demo definitions with the refusal recorded")
            call_command(*load, "--override", OFFLINE_OVERRIDE, stdout=self.stdout, stderr=self.stderr)
        for username, groups in DEMO_USERS.items():
            user, created = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.com"})
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
            user.groups.set([Group.objects.get_or_create(name=g)[0] for g in groups])
            self.stdout.write(f"user {username} ({', '.join(groups)}){' created' if created else ''}")
        self.stdout.write(self.style.SUCCESS(f"Demo ready. Log in as any user above with password {DEMO_PASSWORD!r}."))
