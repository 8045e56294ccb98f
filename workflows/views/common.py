from functools import wraps

from django.shortcuts import render
from django.utils.cache import patch_vary_headers

from ..denials import OutOfScope
from ..roles import has_role


def role_required(*roles):
    """Pages of a role are not there for anyone else: 404, like any object outside one's scope,
    recorded as a (rate-limited) `auth.denied` event by denials.DeniedAccessMiddleware."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not any(has_role(request.user, role) for role in roles):
                raise OutOfScope(f"role page: {'|'.join(roles)}", object_type="page", object_id=request.path[:64])
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def render_page(request, template: str, context: dict, *, partial: str | None = None, status: int = 200):
    """Render the whole page, or only the named partial for an htmx request.

    A history-restore request (back button after hx-push-url) needs the whole page, and
    caches must not hand a partial to a full-page request or the reverse, hence Vary.
    """
    wants_partial = partial and request.htmx and not request.htmx.history_restore_request
    name = f"{template}#{partial}" if wants_partial else template
    response = render(request, name, context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response
