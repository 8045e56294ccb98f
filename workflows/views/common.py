from dataclasses import dataclass
from datetime import datetime
from functools import wraps

from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db.models import Q
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


@dataclass
class KeysetPage:
    """One page of a keyset-paginated list: ``rows``, and the cursor of the next page (None at
    the end). There is no page count and no "last page": counting would scan the list."""

    rows: list
    next_cursor: str | None
    is_first: bool
    notice: str = ""

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)


def _parse_queue_cursor(cursor: str):
    """"<due ISO or ->~<priority>~<id>" -> (due or None, priority, id); ValueError if malformed."""
    due, priority, pk = cursor.split("~")
    due_at = None if due == "-" else datetime.fromisoformat(due)
    if due_at is not None and due_at.tzinfo is None:
        raise ValueError("naive time")
    priority, pk = int(priority), int(pk)
    if not (-(2**15) <= priority < 2**15 and 0 < pk < 2**63):  # the columns' ranges: no database error
        raise ValueError("out of range")
    return due_at, priority, pk


def queue_cursor(task) -> str:
    return f"{task.due_at.isoformat() if task.due_at else '-'}~{task.priority}~{task.pk}"


def keyset_paginate(request, rows, *, per_page: int | None = None) -> KeysetPage:
    """The review queue's pager (offset pages cost the rows skipped, at every poll and page):
    ``?after=<cursor>`` continues after the row the cursor names, in the queue's order
    (due_at ASC NULLS LAST, priority DESC, id ASC). Rows with a due time come from an index
    range starting at the cursor's due time; the undated rows (last in the order) from a second
    read only when the dated ones run out. A malformed cursor is the first page with a notice."""
    per_page = per_page or settings.REVIEWDESK_PAGE_SIZE
    raw = request.GET.get("after") or ""
    notice = ""
    cursor = None
    if raw:
        try:
            cursor = _parse_queue_cursor(raw.replace(" ", "+"))  # a "+" decoded as a space
        except (ValueError, OverflowError):
            notice = "That page link is not valid any more; showing the first page."
    if cursor is None:
        found = list(rows[: per_page + 1])
    else:
        due_at, priority, pk = cursor
        if due_at is not None:
            dated = rows.filter(due_at__gte=due_at).filter(
                Q(due_at__gt=due_at) | Q(priority__lt=priority) | Q(priority=priority, id__gt=pk)
            )
            found = list(dated[: per_page + 1])
            if len(found) <= per_page:
                found += list(rows.filter(due_at__isnull=True)[: per_page + 1 - len(found)])
        else:
            found = list(rows.filter(Q(due_at__isnull=True) & (Q(priority__lt=priority) | Q(priority=priority, id__gt=pk)))
                         [: per_page + 1])
    more = len(found) > per_page
    found = found[:per_page]
    return KeysetPage(rows=found, next_cursor=queue_cursor(found[-1]) if more else None, is_first=cursor is None,
                      notice=notice)
