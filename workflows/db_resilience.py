"""Requests that survive a lost database connection (issue 10).

Two layers, because they catch different moments:

1. **At checkout**: Django 5.2 builds its psycopg pool with
   ``check=ConnectionPool.check_connection`` when ``CONN_HEALTH_CHECKS`` is true (settings.py sets
   it; putting ``check`` into ``OPTIONS["pool"]`` instead raises a TypeError in 5.2, because the
   backend passes ``check=`` itself). A connection the server dropped while it sat in the pool
   (a restart, a failover, ``pg_terminate_backend``) is replaced before a request sees it.

2. **During a request** (this module): a connection can die while a request holds it. A
   database execute-wrapper (``ReconnectingReads``), installed for every request by
   ``DatabaseReconnectMiddleware``, re-runs **one read statement** on a fresh pooled connection
   when the connection died under it, **if the request has not tried to write anything yet**
   and is not inside a transaction. Re-running such a read is the same as the request having
   started a moment later: nothing was written, so nothing can be done twice. A request is never
   replayed, and nothing is re-run once a write was attempted (an INSERT whose answer was lost
   may have committed) or inside ``atomic`` (the transaction's earlier statements are gone). In
   practice every GET is covered, and so is the read-only start of a POST (session, user,
   workflow lookups), which is where a POST spends most of its statements.

   A request that still fails because its connection died (a write, a transaction, a second
   loss) is refused cleanly instead of a 500 page: 409 for POST and the other unsafe methods (htmx
   swaps 409, so the message appears in place) saying the request was interrupted and may not
   have been saved, to check before sending it again (the wizard's idempotency key makes sending
   it again safe); 503 with ``Retry-After`` for GET/HEAD, which a client may simply repeat.

Why a wrapper and not a middleware that retries the view: the lost connection can surface
in any middleware (the session and the user are loaded in ``LoginRequiredMiddleware``), in a
template or in the session save, and Django turns each of those into a 500 response where it
happens; only the database layer sees every statement, and only it knows whether a write was
attempted. No maintained library does this for Django's pool (django-db-geventpool and
friends replace the backend; the retry decorators retry whole functions, which is exactly the
unsafe part).
"""
from __future__ import annotations

import logging
import os
import threading
import time

from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError, connections
from django.db.utils import DEFAULT_DB_ALIAS
from django.http import HttpResponse
from django.template.loader import render_to_string

log = logging.getLogger(__name__)

_READS = ("SELECT", "SHOW")
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def connection_lost(db) -> bool:
    """True when the wrapper's psycopg connection is closed or broken (the server went away),
    as opposed to a query error on a live connection."""
    raw = db.connection
    return raw is not None and (raw.closed or getattr(raw, "broken", False))


class ReconnectingReads:
    """Execute-wrapper for one request: re-run a read once on a fresh connection if the
    connection died under it and nothing was written yet (see the module docstring)."""

    def __init__(self) -> None:
        self.attempted_write = False
        self.retried = False
        self.lost = False

    def __call__(self, execute, sql, params, many, context):
        is_read = not many and sql.lstrip().upper().startswith(_READS)
        if not is_read:
            # Marked before it runs: a write whose answer is lost may still have committed.
            self.attempted_write = True
        try:
            return execute(sql, params, many, context)
        except (OperationalError, InterfaceError):
            db = context["connection"]
            if not connection_lost(db):
                raise
            self.lost = True
            purge_dead_pooled_connections(db)
            if not is_read or self.attempted_write or self.retried or db.in_atomic_block:
                raise
            self.retried = True
            log.warning("database connection lost during a read; re-running it on a fresh connection")
            db.close()  # the pool discards the broken connection
            db.ensure_connection()  # a checked one from the pool
            context["cursor"].cursor = db.create_cursor()  # the caller fetches from this wrapper
            return execute(sql, params, many, context)


_purge_lock = threading.Lock()
_last_purge = 0.0
PURGE_INTERVAL = 1.0


def purge_dead_pooled_connections(db) -> None:
    """Check every idle connection in the pool now (psycopg_pool's ``ConnectionPool.check``) and
    replace the dead ones, at most once a second per process.

    One connection lost in use usually means they all were (a restart, a failover, an operator
    terminating sessions). The check at checkout would find the others one by one, but
    psycopg_pool waits with a growing back-off between failed checks (1, 2, 4 s ...), so a
    request that drew three dead connections in a row waited 7 s and one that drew four ran
    into the pool timeout: a 500 (measured by the fault test before this existed)."""
    global _last_purge
    pool = getattr(db, "pool", None)
    if pool is None:
        return
    with _purge_lock:
        now = time.monotonic()
        if now - _last_purge < PURGE_INTERVAL:
            return
        _last_purge = now
    try:
        pool.check()
    except Exception:  # a purge is an optimisation; the checkout check still holds
        log.warning("checking the pooled connections failed", exc_info=True)


def is_connection_loss(exc: BaseException | None) -> bool:
    """The exception (or one it was raised from) says the database connection went away: a
    psycopg error of class 08 (connection exception) or 57P (the server shut the session down),
    or a client-side one without a SQLSTATE ("server closed the connection unexpectedly", "the
    connection is closed"); a pool timeout is overload, not a loss."""
    import psycopg
    from psycopg_pool import PoolTimeout

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, PoolTimeout):
            return False
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            state = exc.sqlstate
            if state is None or state.startswith(("08", "57P")):
                return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _note_connection_loss(sender, request=None, **kwargs) -> None:
    """got_request_exception: remember on the request that its error was a lost connection
    (a COMMIT whose answer never came fails outside any execute-wrapper)."""
    import sys

    if request is not None and is_connection_loss(sys.exc_info()[1]):
        request.database_connection_lost = True
        purge_dead_pooled_connections(connections[DEFAULT_DB_ALIAS])


got_request_exception.connect(_note_connection_loss, dispatch_uid="reviewdesk-db-connection-loss")


class _PoolChecker:
    """Every REVIEWDESK_DB_POOL_CHECK_SECONDS, ``ConnectionPool.check()`` the idle connections of
    this process's pool (psycopg_pool's public way to find broken connections ahead of use).

    Needed beside the check at checkout: when every connection dies at once and the requests
    find that out at checkout, nobody sees a lost connection in use, and psycopg_pool's growing
    back-off between failed checks (1, 2, 4 s ...) walks each request through the dead ones into
    its 10 s timeout (the fault test saw 500s from exactly that). With the idle connections
    checked every two seconds, a request draws at most a round or two of dead ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0

    def ensure_running(self) -> None:
        from django.conf import settings

        interval = settings.REVIEWDESK_DB_POOL_CHECK_SECONDS
        if not interval or self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():  # started by another thread meanwhile
                return
            self._pid = os.getpid()  # a forked child (gunicorn --preload) starts its own
            threading.Thread(target=self._run, args=(interval,), name="db-pool-check", daemon=True).start()

    def _run(self, interval: float) -> None:
        from psycopg_pool import PoolClosed

        wrapper = connections[DEFAULT_DB_ALIAS]
        pools = getattr(type(wrapper), "_connection_pools", None)
        if pools is None:  # not PostgreSQL with Django's pool (the SQLite demo)
            return
        while True:
            time.sleep(interval)
            # The pool as Django keeps it: never create one (the `pool` property would), and a
            # pool closed meanwhile (a test database being dropped) is left alone.
            pool = pools.get(DEFAULT_DB_ALIAS)
            if pool is None:
                continue
            try:
                pool.check()
            except PoolClosed:
                continue
            except Exception:
                log.warning("checking the pooled connections failed", exc_info=True)


_pool_checker = _PoolChecker()


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's, noting on the request when the session could not be saved because its row was
    gone (SessionInterrupted). Under database faults that happens when an earlier request's
    session INSERT was lost with its connection: this request's work may be done, and Django's
    bare 400 "the session was deleted" says neither that nor what to do. The reconnect
    middleware answers it like any other interrupted request. The session is not re-created:
    a session deleted by a log-out in another tab must stay deleted."""

    def process_response(self, request, response):
        try:
            return super().process_response(request, response)
        except SessionInterrupted:
            request.session_interrupted = True
            raise


class DatabaseReconnectMiddleware:
    """Install ``ReconnectingReads`` for the request; turn an error caused by a lost connection
    into a clean refusal. First in MIDDLEWARE, so the session and auth queries are covered."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        _pool_checker.ensure_running()
        db = connections[DEFAULT_DB_ALIAS]
        if db.connection is None:
            db.errors_occurred = False  # left from an earlier request; connect() clears it too
        reads = ReconnectingReads()
        with db.execute_wrapper(reads):
            response = self.get_response(request)
        # A COMMIT whose answer never came fails outside the execute-wrapper; Django then rolls
        # back, fails again and closes the connection: an error and no connection left.
        dropped = db.errors_occurred and (db.connection is None or connection_lost(db))
        # 400 too: a session save that fails for want of a connection is reported by Django as
        # SessionInterrupted ("the session was deleted"), which is not what happened.
        lost = (reads.lost or dropped or getattr(request, "database_connection_lost", False)
                or getattr(request, "session_interrupted", False))
        if lost and response.status_code in (400, 500):
            return refusal(request)
        return response


def refusal(request) -> HttpResponse:
    # No request context: rendering must not need the database that was just lost.
    safe = request.method in _SAFE_METHODS
    body = render_to_string("connection_lost.html", {"safe": safe})
    response = HttpResponse(body, status=503 if safe else 409)
    response["Retry-After"] = "1"
    return response
