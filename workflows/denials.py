"""Refused access as audit events (`auth.denied`), rate-limited.

Every refusal of a role page or of an object outside the user's scope is a fact an auditor may
want, but a scanner walking ids must not be able to flood the chain: per user (or client
address) and path prefix, at most REVIEWDESK_DENIED_EVENTS_PER_MINUTE events a minute are
written; the rest are counted and the count rides on the next event that is written.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.core.cache import caches

from . import audit
from .vocab import AuditAction

log = logging.getLogger(__name__)


def _who(request) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{request.META.get('REMOTE_ADDR', '')}"


def record_denied(request, *, what: str, object_type: str = "", object_id: str = "") -> bool:
    """Write an `auth.denied` event unless this requester is over the rate limit; returns
    whether an event was written. ``what`` names the refused thing without personal data
    (a role page, an object type and id)."""
    cache = caches[settings.REVIEWDESK_DRAFT_CACHE]
    key = f"denied:{_who(request)}"
    try:
        count = cache.get_or_set(key, 0, timeout=60)
        cache.incr(key)
    except Exception:  # a cache outage must not turn a 404 into a 500
        log.warning("denied-access rate limit unavailable", exc_info=True)
        count = 0
    limit = settings.REVIEWDESK_DENIED_EVENTS_PER_MINUTE
    if count >= limit:
        return False
    user = getattr(request, "user", None)
    audit.record_standalone(
        action=AuditAction.AUTH_DENIED,
        object_type=object_type or "page",
        object_id=object_id or request.path[:64],
        actor=user if user is not None and user.is_authenticated else None,
        payload={"what": what, "method": request.method, "path": request.path[:200],
                 "limit_per_minute": limit},
    )
    return True
