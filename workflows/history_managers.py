"""One history manager class per model, made once instead of on every save.

django-simple-history's ``HistoryDescriptor.__get__`` (``instance.history``) builds a new
manager class with ``HistoryManager.from_queryset(HistoricalQuerySet)`` each time it is read,
and its post_save handler reads it for every history row it writes. ``from_queryset`` creates a
class through ``type()`` after walking the queryset class's members with ``inspect``: about
0.25 ms of CPU, under the GIL, per history row, three rows per draft (the drafting bench's
py-spy profile, tests/bench/README.md). The class depends only on the two classes it is made
from, so it is made once per pair; each read still gets its own manager instance bound to the
instance, exactly as before.
"""
from __future__ import annotations

from functools import cache

from simple_history.manager import HistoryDescriptor


@cache
def _manager_class(manager_class, queryset_class):
    return manager_class.from_queryset(queryset_class)


def _get(self, instance, owner):
    return _manager_class(self.manager_class, self.queryset_class)(self.model, instance)


def install() -> None:
    """Called once from WorkflowsConfig.ready()."""
    HistoryDescriptor.__get__ = _get
