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

The claim reads the answer through a shared cache (the Redis "drafts" cache), kept
HOLD_CACHE_SECONDS per workflow: asking the gate costs a budget query, and with a hard-stop
budget a SUM over the month's model calls, which per draft was a measurable share of the
drafting CPU (tests/bench/README.md). The app behind the gate calls ``refresh_hold`` whenever
it changes the answer (a budget set or removed, the periodic resume), so a change it makes is
seen by the next claim; what changes on its own (spend reaching the budget) is seen within
HOLD_CACHE_SECONDS, and the drafts claimed meanwhile are paid for, as drafts in flight always
were. Pages that tell a person about a hold ask the gate directly.
"""
from __future__ import annotations

import logging
from functools import lru_cache

from django.conf import settings
from django.core.cache import caches
from django.utils.module_loading import import_string

log = logging.getLogger(__name__)

HOLD_CACHE_SECONDS = 5
_KEY = "gate:hold:{}"
_NO_HOLD = "-"  # cached "go ahead" (a cache miss reads as None)


@lru_cache(maxsize=4)
def _gate(path: str):
    return import_string(path)


def generation_hold(*, workflow_id: int, cached: bool = False) -> str | None:
    """Why generation for this workflow must wait now, or None. ``cached``: the answer may be
    up to HOLD_CACHE_SECONDS old (the claim); otherwise the gate is asked now."""
    path = getattr(settings, "REVIEWDESK_GENERATION_GATE", "")
    if not path:
        return None
    if not cached:
        return _gate(path)(workflow_id=workflow_id) or None
    try:
        answer = _cache().get(_KEY.format(workflow_id))
    except Exception:  # an unreachable Redis costs the cache, not the claim
        log.warning("generation gate cache unavailable; asking the gate", exc_info=True)
        return _gate(path)(workflow_id=workflow_id) or None
    if answer is not None:
        return None if answer == _NO_HOLD else answer
    return refresh_hold(workflow_id=workflow_id)


def refresh_hold(*, workflow_id: int) -> str | None:
    """Ask the gate now and keep its answer for the claims that follow."""
    path = getattr(settings, "REVIEWDESK_GENERATION_GATE", "")
    answer = (_gate(path)(workflow_id=workflow_id) or None) if path else None
    try:
        _cache().set(_KEY.format(workflow_id), answer or _NO_HOLD, HOLD_CACHE_SECONDS)
    except Exception:
        log.warning("generation gate cache unavailable", exc_info=True)
    return answer


def _cache():
    return caches[settings.REVIEWDESK_DRAFT_CACHE]
