"""The heartbeat of generation claims: how the sweep tells a slow draft from a dead worker.

A claim used to be presumed abandoned only after the task's time limit + 60 s (7.5 minutes by
default), because a live worker could still be inside a long model call. Now the worker that
holds a claim refreshes `Submission.claim_heartbeat_at` every REVIEWDESK_HEARTBEAT_SECONDS while
the task runs; the sweep takes over a claim whose heartbeat is older than
REVIEWDESK_HEARTBEAT_STALE_SECONDS (at least three beats), so a killed worker's draft is
started again within about half a minute.

One daemon thread per worker process beats every claim that process holds, with one UPDATE per
beat (a threads pool may hold 200 claims; a thread and a query per claim would not scale). The
UPDATE names each claim by (submission, attempt) and state `generating`, so a beat never
refreshes a claim that was taken over or finished: a worker that was presumed dead (a network
partition, a stopped VM) cannot revive its old attempt, and its late result is refused by the
attempt check in `services.draft_record` / `generation_fail`. The thread borrows a pooled
database connection for each beat and gives it back at once.
"""
from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from functools import reduce
from operator import or_

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Q
from django.db.models.functions import Now

log = logging.getLogger(__name__)


class _Beater:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: dict[tuple[int, int], int] = {}  # (submission, attempt) -> holders
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, submission_id: int, attempt: int) -> None:
        with self._lock:
            key = (submission_id, attempt)
            self._claims[key] = self._claims.get(key, 0) + 1
            # A forked child (the prefork pool) inherits the object but not the thread.
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="claim-heartbeat", daemon=True)
                self._thread.start()

    def remove(self, submission_id: int, attempt: int) -> None:
        with self._lock:
            key = (submission_id, attempt)
            if self._claims.get(key, 0) <= 1:
                self._claims.pop(key, None)
            else:
                self._claims[key] -= 1

    def held(self) -> list[tuple[int, int]]:
        with self._lock:
            return list(self._claims)

    def _run(self) -> None:
        stop = threading.Event()  # never set: the thread lives as long as its process
        while not stop.wait(settings.REVIEWDESK_HEARTBEAT_SECONDS):
            claims = self.held()
            if claims:
                beat(claims)


def beat(claims: list[tuple[int, int]]) -> int:
    """Refresh the heartbeat of these (submission, attempt) claims if they are still current;
    returns how many were. A database error is logged and the next beat tries again (the
    stale limit is several beats long)."""
    from .models import Submission, SubmissionState

    try:
        return (
            Submission.objects.filter(state=SubmissionState.GENERATING)
            .filter(reduce(or_, (Q(pk=pk, attempts=attempt) for pk, attempt in claims)))
            .update(claim_heartbeat_at=Now())
        )
    except DatabaseError:
        log.warning("claim heartbeat failed for %d claims; next beat in %ss", len(claims),
                    settings.REVIEWDESK_HEARTBEAT_SECONDS, exc_info=True)
        return 0
    finally:
        # Give the connection back to the pool between beats (and drop a broken one); a caller
        # inside a transaction (a test) keeps its connection.
        if not connection.in_atomic_block:
            connection.close()


_beater = _Beater()


@contextmanager
def beating(submission_id: int, attempt: int):
    """Keep this claim's heartbeat fresh for the duration of the block."""
    _beater.add(submission_id, attempt)
    try:
        yield
    finally:
        _beater.remove(submission_id, attempt)
