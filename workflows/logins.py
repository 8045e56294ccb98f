"""Failed log-ins and lockouts (django-axes) as audit events, and the locked-out answer.

django-axes counts failed log-ins per username and client address in its own table (the database
handler, so every web process and both database engines share the counts) and refuses a pair
that reached REVIEWDESK_LOGIN_FAILURE_LIMIT until the cool-off ends. This module adds what the
audit trail needs on top of axes' own bookkeeping:

* ``auth.locked_out``: written for every lockout, never rate-limited. axes itself bounds it: one
  per username and address per cool-off, after REVIEWDESK_LOGIN_FAILURE_LIMIT failures, each
  costing the attacker a password hash.
* ``auth.login_failed``: every other failed log-in (including a try refused during a lockout),
  rate-limited per client address with the same per-minute budget as ``auth.denied``
  (denials.within_event_limit). Password spraying (one address, many usernames, few tries each)
  never locks any one pair, so without the limit it could write thousands of events a minute.

Neither event stores the password, nor the username as typed (a password typed into the username
field is a classic leak): the object is the account when the username names one, and the payload
holds only counts and the settings in force. The client address is the event's ``ip`` column,
as for every audit event.
"""
from __future__ import annotations

import logging

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.template.response import TemplateResponse

from . import audit
from .denials import within_event_limit
from .vocab import AuditAction

log = logging.getLogger(__name__)


def _cool_off_minutes() -> int:
    return int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)


def _account(username: str | None):
    if not username:
        return None
    User = get_user_model()
    return User._default_manager.filter(**{User.USERNAME_FIELD: username}).only("pk").first()


def _record(request, credentials, *, action: AuditAction, refused_during_lockout: bool = False) -> None:
    account = _account(get_client_username(request, credentials))
    payload = {
        "known_user": account is not None,
        "failures": request.axes_failures_since_start,
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "cool_off_minutes": _cool_off_minutes(),
        "path": request.path[:200],
    }
    if refused_during_lockout:
        payload["refused_during_lockout"] = True
    audit.record_standalone(
        action=action,
        object_type="user",
        object_id=str(account.pk) if account is not None else "unknown",
        payload=payload,
    )


class AuditedAxesHandler(AxesDatabaseHandler):
    """axes' database handler, plus an audit event for each failed log-in and each lockout."""

    def user_login_failed(self, sender, credentials: dict, request=None, **kwargs):
        # The backend marks a try it refused because the pair is already locked out.
        refused = request is not None and bool(getattr(request, "axes_locked_out", False))
        super().user_login_failed(sender, credentials, request, **kwargs)
        if request is None:
            return
        try:
            if not refused and request.axes_locked_out:
                _record(request, credentials, action=AuditAction.AUTH_LOCKED_OUT)
            elif within_event_limit(f"login_failed:ip:{request.axes_ip_address}"):
                _record(request, credentials, action=AuditAction.AUTH_LOGIN_FAILED, refused_during_lockout=refused)
        except Exception:  # the refusal stands whatever happens to its record
            log.exception("could not record a failed log-in")


def lockout_response(request, original_response=None, credentials=None):
    """The log-in page again, with a plain message and 429 Too Many Requests (AXES_LOCKOUT_CALLABLE).

    The message is the same whether or not the username exists, so a lockout tells nobody which
    accounts are real."""
    minutes = _cool_off_minutes()
    context = {
        "form": AuthenticationForm(request),
        "next": request.POST.get("next", "") if request.method == "POST" else "",
        "locked_out": True,
        "cool_off_minutes": minutes,
    }
    response = TemplateResponse(request, "registration/login.html", context, status=429)
    response["Retry-After"] = str(minutes * 60)
    return response.render()
