"""The draft as it is written, for the submission page: server-sent events (issue 8, section 3).

An async view: one open connection per watching page for the seconds a draft takes, which a
sync worker would hold a whole thread for. Under ASGI (uvicorn workers, docker-compose.yml) it
waits on Redis in the event loop; the scoped lookup before it runs in a thread like any sync
view. Whether anything is published at all is the worker's decision
(workflows/draft_stream.streams_to_submitter); this view adds the reader's checks: the
submission is in their scope (else 404), still being drafted, and its workflow may stream.
Otherwise it answers 204, which tells EventSource not to reconnect: the page polls instead.
The waiting on Redis is shared by all pages of the process (workflows/draft_stream_hub.py), up
to REVIEWDESK_SSE_MAX_WATCHERS pages; past that it answers 503, after which the page polls too.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpResponse, StreamingHttpResponse
from django.views.decorators.http import require_safe

from .. import draft_stream, draft_stream_hub, selectors

log = logging.getLogger(__name__)

# A page watches one draft at most this long; then it polls (a draft takes seconds, a stalled
# one is the sweep's business, not a connection's).
MAX_SECONDS = 180
PING_SECONDS = 15
# Stream entry kind -> SSE event name (static/js/submit.js listens for these).
EVENTS = {"start": "reset", "text": "text", "end": "end"}


def _target(user, pk: int):
    """The submission (scoped: 404 outside the reader's scope) and whether to stream it now."""
    try:
        submission = selectors.submission_for(user, pk)
        streams = (
            draft_stream.available()
            and submission.is_drafting
            and draft_stream.streams_to_submitter(submission.workflow_version.spec)
        )
        return submission, streams
    finally:
        # Django hands a request's pooled connection back on request_finished, which for a
        # streaming response comes when the stream ends: every watching page would hold one of
        # the REVIEWDESK_DB_POOL_MAX (10) connections for the whole draft, and the eleventh
        # page would wait for the pool (tests/bench/bench_sse.py: 10 of 200 watchers served).
        # The stream needs no database, so give it back now. (Inside a test's transaction the
        # connection is the test's: leave it.)
        if not connection.in_atomic_block:
            connection.close()


@require_safe
async def submission_stream(request, pk: int):
    user = await request.auser()
    submission, streams = await sync_to_async(_target)(user, pk)
    if not streams:
        return HttpResponse(status=204)
    if draft_stream_hub.current_hub().full():
        # As many pages as this process serves already watch a draft. 503 (not 204: this is the
        # server's limit, and it shows as such in the access log); EventSource does not
        # reconnect after either, and the page's polling shows the result as always.
        return HttpResponse("Too many pages are watching drafts on this server; this page checks for "
                            "the result every few seconds instead.", status=503, content_type="text/plain")
    last_id = request.headers.get("Last-Event-ID", "0-0")
    if not _valid_id(last_id):
        last_id = "0-0"
    response = StreamingHttpResponse(
        _events(submission.pk, submission.attempts, last_id), content_type="text/event-stream",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a proxy in front must not hold the events back
    return response


def _valid_id(value: str) -> bool:
    left, _, right = value.partition("-")
    return left.isdigit() and right.isdigit() and len(value) < 50


async def _events(submission_id: int, attempt: int, last_id: str):
    """Entries of the submission's stream as SSE events, from ``last_id`` on, until the
    attempt's "end" entry (or MAX_SECONDS). Entries of another attempt are skipped: a retried
    or regenerated submission's page shows only the draft now being written.

    The entries come from this process's hub (workflows/draft_stream_hub.py), which reads every
    watched stream in one XREAD. The watch is taken here, not in the view, and given back in
    ``finally``: Django closes this generator when the client goes away (and cancels it while it
    waits), so a page that leaves frees its place at once; a generator that never started holds
    none."""
    hub = draft_stream_hub.current_hub()
    watch = hub.watch(draft_stream.stream_key(submission_id), last_id)
    started = time.monotonic()
    wanted = str(attempt).encode()
    try:
        yield "retry: 3000\n\n"
        if watch is None:  # the hub filled up between the view's check and now: the page polls
            yield "event: end\ndata: {}\n\n"
            return
        while (left := MAX_SECONDS - (time.monotonic() - started)) > 0:
            try:
                entries = await asyncio.wait_for(watch.queue.get(), timeout=min(PING_SECONDS, left))
            except TimeoutError:
                yield ": still drafting\n\n"
                continue
            if entries is hub.BROKEN:
                break  # the hub logged the Redis error once for all its pages
            for entry_id, fields in entries:
                if fields.get(b"a") != wanted:
                    continue
                kind = fields.get(b"k", b"").decode()
                event = EVENTS.get(kind)
                if event is None:
                    continue
                data = json.dumps({"t": fields.get(b"t", b"").decode("utf-8", "replace")}) if kind == "text" else "{}"
                yield f"id: {entry_id.decode()}\nevent: {event}\ndata: {data}\n\n"
                if kind == "end":
                    return
        yield "event: end\ndata: {}\n\n"
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except Exception:  # noqa: BLE001 - the page falls back to polling; say why in the log
        log.warning("draft stream of submission %s broke off", submission_id, exc_info=True)
        yield "event: end\ndata: {}\n\n"
    finally:
        if watch is not None:
            hub.release(watch)
