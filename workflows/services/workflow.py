"""Publishing workflow definitions as immutable versions."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field

import yaml
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.module_loading import import_string

from .. import audit
from ..definitions import WorkflowDefinition, definition_hash, parse_yaml
from ..models import DomainError, Workflow, WorkflowVersion
from ..roles import WORKFLOW_ADMIN, system_user
from ..vocab import AuditAction
from .common import track

log = logging.getLogger(__name__)


class PublishRefused(DomainError):
    """The publish gate refused a version; `reasons` say why, `gate` holds what was measured."""

    def __init__(self, reasons: list[str], gate: dict):
        self.reasons, self.gate = reasons, gate
        super().__init__("Publishing refused: " + "; ".join(reasons))


@dataclass(frozen=True)
class GateResult:
    """What the publish gate found (settings.REVIEWDESK_PUBLISH_GATE names the function that
    returns it: evals.gate.check, so that workflows never imports the apps built on it)."""
    ok: bool
    measured: bool
    reasons: tuple[str, ...] = ()
    evidence: dict = field(default_factory=dict)

    def as_payload(self) -> dict:
        return {"ok": self.ok, "measured": self.measured, "reasons": list(self.reasons), **self.evidence}


def run_publish_gate(version: WorkflowVersion, *, run_missing: bool = False) -> GateResult:
    path = settings.REVIEWDESK_PUBLISH_GATE
    if not path:
        return GateResult(ok=True, measured=False, evidence={"note": "no publish gate configured"})
    return import_string(path)(version, run_missing=run_missing)


@transaction.atomic
def version_candidate(*, spec: WorkflowDefinition, source_yaml: str = "", actor=None, note: str = "") -> tuple[WorkflowVersion, bool]:
    """Save ``spec`` as a candidate version (not yet what submitters get). Returns (version,
    created): a definition equal to the current version or to an open candidate is that version."""
    actor = actor or system_user()
    definition = spec.as_dict()
    digest = definition_hash(definition)
    workflow, _ = Workflow.objects.select_for_update().get_or_create(
        slug=spec.slug, defaults={"name": spec.name, "description": spec.description}
    )
    current = workflow.current_version
    same = workflow.versions.filter(definition_hash=digest).order_by("-number")
    existing = same.filter(pk=current.pk).first() if current else None
    existing = existing or same.candidates().first()
    if existing is not None:
        return existing, False
    last = workflow.versions.order_by("-number").first()
    version = WorkflowVersion(
        workflow=workflow,
        number=(last.number + 1) if last else 1,
        definition=definition,
        definition_text=json.dumps(definition, ensure_ascii=False),
        source_yaml=source_yaml,
        definition_hash=digest,
        created_by=actor if actor.is_active else None,
        note=note[:300],
    )
    track(version, actor, "candidate created").save()
    audit.record(
        action=AuditAction.WORKFLOW_CANDIDATE_CREATED,
        obj=version,
        actor=actor,
        workflow_version=version,
        payload={"slug": spec.slug, "number": version.number, "definition_hash": digest, "note": note[:300]},
    )
    return version, True


def version_from_threshold(*, version_id: int, auto_approve_at: float, actor, note: str = "") -> tuple[WorkflowVersion, bool]:
    """A candidate equal to a version but for its auto-approve threshold (calibration's
    recommendation). The YAML keeps its comments: only the threshold's line changes."""
    base = WorkflowVersion.objects.get(pk=version_id)
    threshold = round(float(auto_approve_at), 2)
    if threshold < base.spec.routing.block_below:
        raise DomainError(f"The threshold {threshold:.2f} is under block_below ({base.spec.routing.block_below:.2f}); "
                          f"lower block_below in the editor first.")
    source = base.source_yaml or yaml.safe_dump(base.definition, sort_keys=False, allow_unicode=True)
    changed, count = re.subn(r"^(\s*auto_approve_at:\s*)[0-9.]+", rf"\g<1>{threshold:.2f}", source, count=1, flags=re.M)
    if not count:
        data = yaml.safe_load(source)
        data.setdefault("routing", {})["auto_approve_at"] = threshold
        changed = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return version_candidate(spec=parse_yaml(changed), source_yaml=changed, actor=actor, note=note)


def version_publish(*, version_id: int, actor=None, reason: str = "", override: str = "",
                    run_missing: bool = False) -> WorkflowVersion:
    """Make a candidate the current version, through the publish gate.

    The gate (its eval, and the current version's for comparison) runs before the transaction:
    it may call the model. A refusal stands unless `override` gives a reason, which is itself an
    audit event (`workflow.publish_overridden`) with what the gate found.
    """
    version = WorkflowVersion.objects.select_related("workflow").get(pk=version_id)
    if not version.is_candidate:
        raise DomainError(f"v{version.number} is already published; roll back to it to publish its definition again.")
    gate = run_publish_gate(version, run_missing=run_missing)
    override = override.strip()
    if not gate.ok and not override:
        raise PublishRefused(list(gate.reasons), gate.as_payload())
    return _publish(version_id, actor=actor or system_user(), reason=reason.strip(), override=override, gate=gate)


@transaction.atomic
@audit.batch()
def _publish(version_id: int, *, actor, reason: str, override: str, gate: GateResult) -> WorkflowVersion:
    workflow = Workflow.objects.select_for_update(of=("self",)).get(versions__pk=version_id)
    version = WorkflowVersion.objects.get(pk=version_id)
    if not version.is_candidate:
        raise DomainError(f"v{version.number} was published meanwhile.")
    previous = workflow.current_version
    spec = version.spec
    if not gate.ok:
        audit.record(action=AuditAction.WORKFLOW_PUBLISH_OVERRIDDEN, obj=version, actor=actor, workflow_version=version,
                     payload={"slug": workflow.slug, "number": version.number, "override": override[:500],
                              "gate": gate.as_payload()})
    workflow.name, workflow.description = spec.name, spec.description
    track(workflow, actor, "workflow published").save()
    workflow.reviewer_groups.set([Group.objects.get_or_create(name=name)[0] for name in spec.reviewer_groups])
    if spec.routing.escalation_group:  # exists from publication on, like the reviewer groups (issue 8)
        Group.objects.get_or_create(name=spec.routing.escalation_group)
    version.published_at = timezone.now()
    version.published_by = actor if actor.is_active else None
    track(version, actor, "workflow published").save(_allow_update=True)
    audit.record(
        action=AuditAction.WORKFLOW_PUBLISHED,
        obj=version,
        actor=actor,
        workflow_version=version,
        payload={"slug": workflow.slug, "number": version.number, "definition_hash": version.definition_hash,
                 "previous": previous.number if previous else None, "reason": reason[:500],
                 "overridden": bool(override), "gate": gate.as_payload()},
    )
    return version


def version_rollback(*, to_version_id: int, actor=None, reason: str = "", override: str = "",
                     run_missing: bool = False) -> WorkflowVersion:
    """Publish an earlier version's definition again, as a new number, through the same gate."""
    old = WorkflowVersion.objects.select_related("workflow").get(pk=to_version_id)
    if old.is_candidate:
        raise DomainError(f"v{old.number} was never published; publish it instead of rolling back to it.")
    current = old.workflow.current_version
    if current is not None and current.definition_hash == old.definition_hash:
        raise DomainError(f"v{current.number}, the current version, already has v{old.number}'s definition.")
    with transaction.atomic():
        # Numbered under the workflow's row lock, as version_candidate numbers: two roll-backs
        # (or a roll-back and a save) at once get consecutive numbers, not one IntegrityError.
        workflow = Workflow.objects.select_for_update().get(pk=old.workflow_id)
        copy = WorkflowVersion(
            workflow=workflow, number=workflow.versions.order_by("-number").first().number + 1,
            definition=old.definition, definition_text=old.definition_text, source_yaml=old.source_yaml,
            definition_hash=old.definition_hash, created_by=actor if actor is not None and actor.is_active else None,
            note=f"rollback to v{old.number}",
        )
        track(copy, actor or system_user(), f"rollback to v{old.number}").save()
        audit.record(action=AuditAction.WORKFLOW_ROLLED_BACK, obj=copy, actor=actor or system_user(), workflow_version=copy,
                     payload={"slug": old.workflow.slug, "to": old.number, "as": copy.number, "reason": reason[:500]})
    return version_publish(version_id=copy.pk, actor=actor, reason=reason or f"rollback to v{old.number}",
                           override=override, run_missing=run_missing)


def workflow_publish(*, spec: WorkflowDefinition, source_yaml: str = "", actor=None, reason: str = "",
                     override: str = "", run_missing: bool = True) -> tuple[WorkflowVersion, bool]:
    """Candidate and publish in one step (load_workflows --publish): returns (version, created).
    An unchanged definition returns the current version, so it can run on every start."""
    version, created = version_candidate(spec=spec, source_yaml=source_yaml, actor=actor)
    if not version.is_candidate:
        return version, False
    return version_publish(version_id=version.pk, actor=actor, reason=reason, override=override,
                           run_missing=run_missing), True


def workflow_publish_yaml(*, text: str, actor=None, **kwargs) -> tuple[WorkflowVersion, bool]:
    return workflow_publish(spec=parse_yaml(text), source_yaml=text, actor=actor, **kwargs)


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
