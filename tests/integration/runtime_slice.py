"""A slice of the application run as the runtime database role (tests/integration/test_db_roles.py
runs it in a subprocess whose DATABASE_URL logs in as that role): demo data, two submissions
drafted and routed by the offline engine, an erasure request, a retention purge, a checkpoint and
the chainer linking the events, the full audit verification. Prints one JSON line with what happened; any refused statement
raises and fails the subprocess."""
import json
from datetime import timedelta
from io import StringIO

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from tests.conftest import CUSTOMER_REPLY_INPUT
from workflows import audit, services
from workflows.audit_chain import verify_checkpoint
from workflows.models import AuditEvent, Submission, Workflow
from workflows.tasks import generate_draft


def main() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        role = cursor.fetchone()[0]
    call_command("seed_demo", stdout=StringIO())
    users = get_user_model().objects
    version = Workflow.objects.get(slug="customer-reply").versions.order_by("-number").first()
    first = services.submission_create(version=version, user=users.get(username="submitter"),
                                       data=dict(CUSTOMER_REPLY_INPUT))
    second = services.submission_create(version=version, user=users.get(username="compliance"),
                                        data=dict(CUSTOMER_REPLY_INPUT))
    for submission in (first, second):
        generate_draft(submission.pk)  # in this process: the task body, as the worker runs it
    states = {s.pk: s.state for s in Submission.objects.filter(pk__in=[first.pk, second.pk])}
    lanes = {s.pk: s.lane for s in Submission.objects.filter(pk__in=[first.pk, second.pk])}
    erased = services.erase_submissions_of(user_id=first.submitted_by_id, request_ref="TICKET-1")
    purged = services.purge_expired(now=timezone.now() + timedelta(days=400))
    # The chainer, as the runtime role: EXECUTE on the SECURITY DEFINER function, no UPDATE.
    linked = audit.chain_now()
    checkpoint = verify_checkpoint()
    linked += audit.chain_now()  # the checkpoint's own event
    out = StringIO()
    call_command("verify_audit", stdout=out, stderr=StringIO())
    print(json.dumps({
        "role": role, "states": list(states.values()), "lanes": list(lanes.values()),
        "erased": erased, "purged": purged, "checkpoint_ok": checkpoint.ok,
        "events": AuditEvent.objects.count(), "verify_audit": out.getvalue().strip(), "linked": linked,
        "unchained": AuditEvent.objects.filter(seq__isnull=True).count(),
    }))


main()
