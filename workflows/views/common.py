from functools import wraps

from django.conf import settings
from django.core.paginator import Page, Paginator
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


def paginate(request, rows, *, per_page: int | None = None) -> Page:
    """One page of a list, chosen by ``?page=``; every list in the app goes through here and
    templates/_pagination.html, so the rules are the same everywhere.

    ``rows`` must be ordered on something unique (end with the primary key), or rows with equal
    sort keys could move between pages and some would never be shown. A page that is not a
    number (``abc``, empty) is the first page and a number out of range (``0``, ``-3``, ``999``)
    the last one (Django's ``Paginator.get_page``): a stale link, or a queue poll after rows
    were decided, still shows rows rather than an error.
    """
    return Paginator(rows, per_page or settings.REVIEWDESK_PAGE_SIZE).get_page(request.GET.get("page"))
