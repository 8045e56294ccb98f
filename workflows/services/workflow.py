"""Publishing workflow definitions as immutable versions."""
from __future__ import annotations

import json
import logging

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .. import audit
from ..definitions import WorkflowDefinition, definition_hash, parse_yaml
from ..models import DomainError, Workflow, WorkflowVersion
from ..roles import WORKFLOW_ADMIN, system_user
from ..vocab import AuditAction
from .common import track

log = logging.getLogger(__name__)


@transaction.atomic
def workflow_publish(*, spec: WorkflowDefinition, source_yaml: str = "", actor=None) -> tuple[WorkflowVersion, bool]:
    """Publish ``spec`` as a new immutable version. Returns (version, created).

    Publishing an unchanged definition again returns the current version, so `load_workflows`
    can run on every start.
    """
    actor = actor or system_user()
    definition = spec.as_dict()
    digest = definition_hash(definition)
    workflow, _ = Workflow.objects.select_for_update().get_or_create(
        slug=spec.slug, defaults={"name": spec.name, "description": spec.description}
    )
    current = workflow.current_version
    if current is not None and current.definition_hash == digest:
        return current, False
    workflow.name, workflow.description = spec.name, spec.description
    track(workflow, actor, "workflow published").save()
    groups = [Group.objects.get_or_create(name=name)[0] for name in spec.reviewer_groups]
    workflow.reviewer_groups.set(groups)
    version = WorkflowVersion(
        workflow=workflow,
        number=(current.number + 1) if current else 1,
        definition=definition,
        definition_text=json.dumps(definition, ensure_ascii=False),
        source_yaml=source_yaml,
        definition_hash=digest,
        published_by=actor if actor.is_active else None,
    )
    track(version, actor, "workflow published").save()
    audit.record(
        action=AuditAction.WORKFLOW_PUBLISHED,
        obj=version,
        actor=actor,
        workflow_version=version,
        payload={"slug": spec.slug, "number": version.number, "definition_hash": digest},
    )
    return version, True


def workflow_publish_yaml(*, text: str, actor=None) -> tuple[WorkflowVersion, bool]:
    return workflow_publish(spec=parse_yaml(text), source_yaml=text, actor=actor)


def _tell_people_of(workflow: Workflow, subject: str, body: str) -> None:
    """E-mail the workflow admins and the workflow's reviewers (after commit; a mail server that
    is down must not undo the hold, so a failure is logged, not raised)."""
    User = get_user_model()
    people = User.objects.filter(is_active=True).exclude(email="").filter(
        Q(groups__name=WORKFLOW_ADMIN) | Q(groups__in=workflow.reviewer_groups.all())
    ).distinct()
    recipients = sorted(people.values_list("email", flat=True))

    def send():
        if not recipients:
            return
        try:
            send_mail(subject, body, None, recipients)
        except Exception:  # any mail backend error: the hold stands, the log says who was not told
            log.exception("could not e-mail %s about %s", recipients, workflow.slug)

    transaction.on_commit(send)


@transaction.atomic
def workflow_hold(*, workflow_id: int, kind: str, reason: str, actor=None, evidence: dict | None = None) -> Workflow:
    """Hold a workflow's automation: from now on every new draft waits for a person. `kind` is
    "stopped" (a workflow admin's stop control) or "monitor" (the quality monitor's pause)."""
    reason = reason.strip()
    if kind not in ("stopped", "monitor"):
        raise DomainError(f"unknown hold kind {kind!r}")
    if not reason:
        raise DomainError("Say why automation stops; the audit trail and the reviewers will read it.")
    workflow = Workflow.objects.select_for_update().get(pk=workflow_id)
    if workflow.automation_hold:
        raise DomainError(f"Automation is already held ({workflow.get_automation_hold_display()}).")
    actor = actor or system_user()
    workflow.automation_hold, workflow.automation_hold_reason = kind, reason[:2000]
    workflow.automation_held_at = timezone.now()
    track(workflow, actor, f"automation {kind}").save()
    action = AuditAction.AUTOMATION_STOPPED if kind == "stopped" else AuditAction.AUTOMATION_PAUSED
    # The reason is an admin's or the monitor's words about the workflow, not about a person.
    audit.record(action=action, obj=workflow, actor=actor, workflow_version=workflow.current_version,
                 payload={"slug": workflow.slug, "reason": reason[:500], **(evidence or {})})
    _tell_people_of(
        workflow, f"ReviewDesk: automation of {workflow.name} is {'stopped' if kind == 'stopped' else 'paused'}",
        f"Every new {workflow.name} draft now waits for a reviewer; nothing is auto-approved or released "
        f"without one.\n\nWhy: {reason}\n\nA workflow admin resumes it with a reason.",
    )
    return workflow


@transaction.atomic
def workflow_resume(*, workflow_id: int, reason: str, actor) -> Workflow:
    reason = reason.strip()
    if not reason:
        raise DomainError("Say why automation may resume.")
    workflow = Workflow.objects.select_for_update().get(pk=workflow_id)
    if not workflow.automation_hold:
        raise DomainError("Automation is not held.")
    previous = workflow.automation_hold
    workflow.automation_hold, workflow.automation_hold_reason, workflow.automation_held_at = "", "", None
    # The quality monitor counts only decisions after this: the evidence that paused it has
    # been looked at by the person resuming.
    workflow.automation_resumed_at = timezone.now()
    track(workflow, actor, "automation resumed").save()
    audit.record(action=AuditAction.AUTOMATION_RESUMED, obj=workflow, actor=actor,
                 workflow_version=workflow.current_version,
                 payload={"slug": workflow.slug, "reason": reason[:500], "was": previous})
    _tell_people_of(workflow, f"ReviewDesk: automation of {workflow.name} resumed",
                    f"Drafts are routed by their score again.\n\nWhy: {reason}")
    return workflow
