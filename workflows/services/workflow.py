"""Publishing workflow definitions as immutable versions."""
from __future__ import annotations

import json

from django.contrib.auth.models import Group
from django.db import transaction

from .. import audit
from ..definitions import WorkflowDefinition, definition_hash, parse_yaml
from ..models import Workflow, WorkflowVersion
from ..roles import system_user
from ..vocab import AuditAction
from .common import track


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
