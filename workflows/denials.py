"""Refused access as audit events (`auth.denied`), rate-limited.

Every refusal of a role page or of an object outside the user's scope is a fact an auditor may
want, but a scanner walking ids must not be able to flood the chain: per user (or client
address), at most REVIEWDESK_DENIED_EVENTS_PER_MINUTE events a minute are written; further
refusals in that minute are answered the same way (404) but not written.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.core.cache import caches
from django.http import Http404

from . import audit
from .vocab import AuditAction

log = logging.getLogger(__name__)


def _who(request) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{request.META.get('REMOTE_ADDR', '')}"


def within_event_limit(key: str) -> bool:
    """Count one more event under ``key`` (a kind and a requester) in the current minute and say
    whether it is still within REVIEWDESK_DENIED_EVENTS_PER_MINUTE. Shared by the refusals here
    and the failed log-ins (workflows/logins.py), each under its own key."""
    cache = caches[settings.REVIEWDESK_DRAFT_CACHE]
    try:
        count = cache.get_or_set(key, 0, timeout=60)
        cache.incr(key)
    except Exception:  # a cache outage must not turn a refusal into a 500
        log.warning("audit event rate limit unavailable", exc_info=True)
        count = 0
    return count < settings.REVIEWDESK_DENIED_EVENTS_PER_MINUTE


def record_denied(request, *, what: str, object_type: str = "", object_id: str = "") -> bool:
    """Write an `auth.denied` event unless this requester is over the rate limit; returns
    whether an event was written. ``what`` names the refused thing without personal data
    (a role page, an object type and id)."""
    limit = settings.REVIEWDESK_DENIED_EVENTS_PER_MINUTE
    if not within_event_limit(f"denied:{_who(request)}"):
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


class OutOfScope(Http404):
    """A 404 that is a refusal (a role page, an object outside the user's scope), not a
    missing thing. `DeniedAccessMiddleware` records it as `auth.denied`."""

    def __init__(self, what: str, *, object_type: str = "", object_id: str = ""):
        super().__init__("Not found")
        self.what, self.object_type, self.object_id = what, object_type, str(object_id)


def get_in_scope(queryset, **lookup):
    """get_object_or_404 for a user-scoped queryset: a miss is an `OutOfScope` refusal."""
    try:
        return queryset.get(**lookup)
    except queryset.model.DoesNotExist:
        model = queryset.model._meta.model_name
        value = next(iter(lookup.values()), "")
        raise OutOfScope(f"object outside scope: {model}", object_type=model, object_id=str(value)[:64]) from None


class DeniedAccessMiddleware:
    """Writes a (rate-limited) `auth.denied` event for every `OutOfScope` a view raises by a
    signed-in user. Anonymous requests never reach a scoped view (login comes first)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, OutOfScope) and request.user.is_authenticated:
            try:
                record_denied(request, what=exception.what, object_type=exception.object_type,
                              object_id=exception.object_id)
            except Exception:  # the refusal stands whatever happens to its record
                log.warning("could not record a denied access", exc_info=True)
        return None
