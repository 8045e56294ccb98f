"""The generation gate: the one hook through which another app may hold generation.

``workflows`` must not import the apps built on it (DESIGN.md section 7), yet the costs app
decides whether a workflow may spend more this month. The project settings name a callable,
``REVIEWDESK_GENERATION_GATE = "costs.budgets.generation_gate"``, called as
``gate(workflow_id=...)`` while ``generation_claim`` holds the submission's row lock. It answers
None (go ahead) or a short reason code (``"budget"``), and the submission is paused instead of
claimed. A setting rather than a signal, because the claim needs one answer, not a broadcast.

The check sits at the claim and not in the pipeline's ``budget_check_stage``: pausing is a
state change with an audit event, and ``pipeline.run`` writes nothing (it also serves eval
runs and the editor's dry run, which a production budget must not stop).
"""
from __future__ import annotations

from functools import lru_cache

from django.conf import settings
from django.utils.module_loading import import_string


@lru_cache(maxsize=4)
def _gate(path: str):
    return import_string(path)


def generation_hold(*, workflow_id: int) -> str | None:
    """Why generation for this workflow must wait now, or None."""
    path = getattr(settings, "REVIEWDESK_GENERATION_GATE", "")
    if not path:
        return None
    return _gate(path)(workflow_id=workflow_id) or None
