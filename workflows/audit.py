"""The audit chain: append, chain, verify.

Each event's hash is SHA-256 over the previous hash and a canonical JSON encoding of the
event's facts, so changing, removing or reordering any row breaks every link after it.

Appending and linking are two steps on PostgreSQL (migration 0012, docs/ARCHITECTURE.md "The
chain at scale"): ``record`` INSERTs the event unchained (``seq``, ``prev_hash``, ``hash`` null)
in the transaction of the change it records, with no lock and no head read, so the chain never
holds a writer; after the commit, ONE chainer (``chain_all``, run by the ``chain_audit`` task a
moment after each commit, and by beat as a safety net) links the committed unchained events in
id order: each gets the next ``seq``, the head as ``prev_hash`` and its hash. The chain's order is
``seq``. On SQLite (make run) the event is linked as it is inserted: SQLite has one writer at a
time anyway.
"""
from __future__ import annotations

import gc
import hashlib
import ipaddress
import json
import json.encoder
import logging
import threading
import time
from contextlib import closing, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, Iterable

from django.db import connection, transaction
from django.utils import timezone

from .models import AuditEvent
from .request_context import client_ip_var, in_web_request_var, request_id_var
from .vocab import AuditAction

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
# Version of the canonical encoding hashed into the chain (canonical_json of _hashed_fields):
# JSON with sorted keys, separators "," and ":", UTF-8, ensure_ascii=False, default=str;
# created_at as datetime.isoformat() in UTC, integral numbers in payloads stored as ints.
# Exports name it in their manifest; tools/verify_export.py reproduces version 1.
ENCODING_VERSION = 1
HASH_ALGORITHM = "sha256"
# Any constant works; it only has to be the same for every chainer (migration 0012's function
# takes it itself).
_CHAIN_LOCK_KEY = 7_302_114_001
# Events linked per chainer transaction: one statement, a few tens of milliseconds at most.
CHAIN_BATCH = 2_000
# An unchained event older than this is reported by verify_audit and the compliance page: the
# chainer runs within about a second of every commit, so this means it is not running.
CHAIN_LAG_WARNING_SECONDS = 10


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _stored_number(text: str) -> int | float:
    # PostgreSQL's jsonb keeps the decimal value of a number, not its spelling: 1e+16 comes
    # back as the integer 10000000000000000 and -0.0 as 0.0, so the stored row would no longer
    # hash to the value computed when it was written. Storing every integral number as an int
    # (5.0 as 5) gives one spelling that survives the round trip.
    number = Decimal(text)
    return int(number) if number == number.to_integral_value() else float(text)


def _as_stored(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as the database will give it back: plain JSON types, integral numbers as ints."""
    return json.loads(canonical_json(payload), parse_float=_stored_number)


def content_hash(text: str | None) -> str:
    return hashlib.sha256((text or "").encode()).hexdigest()


def _hashed_fields(event: AuditEvent) -> dict[str, Any]:
    return {
        "created_at": event.created_at.isoformat(),
        "actor": event.actor_label,
        "actor_id": event.actor_id,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": str(event.object_id),
        "workflow_version": event.workflow_version_id,
        "payload": event.payload,
        "request_id": event.request_id,
        "ip": event.ip,
    }


def compute_hash(prev_hash: str, event: AuditEvent) -> str:
    return hashlib.sha256((prev_hash + canonical_json(_hashed_fields(event))).encode()).hexdigest()


def _normalised_ip(raw: str | None) -> str | None:
    """The address as the database will store it, so the hash covers the stored value.

    GenericIPAddressField compresses IPv6 and unwraps IPv4-mapped addresses on save; a zone
    id (fe80::1%eth0) or a malformed REMOTE_ADDR would otherwise break the chain or the write.
    """
    if not raw:
        return None
    try:
        address = ipaddress.ip_address(raw.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def _lock_chain() -> None:
    # SQLite only (linked at insert): it serialises writers anyway; kept explicit for clarity.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])


# Events recorded inside ``batch()`` wait here and are inserted together at its end.
_pending: ContextVar[list[AuditEvent] | None] = ContextVar("reviewdesk_audit_batch", default=None)


@contextmanager
def batch():
    """Insert every event recorded inside this block at its end, in one statement.

    A service that records several events (a routed draft: generated, routed, released,
    auto-approved) sends them as one INSERT. Must run inside the transaction of the change (as
    record() must); nothing is written if the block raises.
    """
    if _pending.get() is not None:  # nested: the outer batch inserts
        yield
        return
    token = _pending.set([])
    try:
        yield
        events = _pending.get()
    finally:
        _pending.reset(token)
    _append(events)


def _append(events: list[AuditEvent]) -> None:
    if not events:
        return
    if connection.vendor == "postgresql":
        # Unchained: no lock, no head read. The chainer links them once they are committed.
        AuditEvent.objects.bulk_create(events)
        transaction.on_commit(request_chaining)
        return
    _lock_chain()
    head_seq, head = AuditEvent.objects.filter(seq__isnull=False).order_by("-seq").values_list(
        "seq", "hash").first() or (0, GENESIS_HASH)
    for event in events:
        head_seq += 1
        event.seq, event.prev_hash = head_seq, head
        event.hash = head = compute_hash(head, event)
    AuditEvent.objects.bulk_create(events)


# --- the chainer (PostgreSQL) ------------------------------------------------------------------

# The unchained events, oldest id first: the fields canonical_json covers, as _walk reads them.
_PENDING_SQL = (
    "SELECT id, created_at AT TIME ZONE 'UTC', actor_label, actor_id, action, object_type, object_id, "
    "workflow_version_id, payload::text, request_id, host(ip) FROM workflows_auditevent "
    "WHERE seq IS NULL ORDER BY id LIMIT %s"
)


def _canonical_row(created_at, actor_label, actor_id, action, object_type, object_id, workflow_version_id,
                   payload_text, request_id, ip) -> str:
    """canonical_json(_hashed_fields(event)) of a stored row, spelled as _walk spells it."""
    string = json.encoder.encode_basestring
    return (
        f'{{"action":{string(action)},"actor":{string(actor_label)},'
        f'"actor_id":{"null" if actor_id is None else int(actor_id)},'
        f'"created_at":{string(created_at.isoformat() + "+00:00")},"ip":{"null" if ip is None else string(ip)},'
        f'"object_id":{string(object_id)},"object_type":{string(object_type)},'
        f'"payload":{_encode(json.loads(payload_text))},'
        f'"request_id":{"null" if request_id is None else string(request_id)},'
        f'"workflow_version":{"null" if workflow_version_id is None else int(workflow_version_id)}}}'
    )


def chain_pending(limit: int | None = None) -> int | None:
    """Link up to ``limit`` committed unchained events, in id order, in one transaction.

    Returns how many were linked, or None when another chainer holds the chain lock (it links
    them). Crash-safe: the links of a batch commit together or not at all, and a batch that
    dies leaves its events unchained for the next run. The canonical JSON is computed here from
    the stored rows (what verification recomputes); reviewdesk_audit_chain takes the lock, reads
    the head and hashes in the database (migration 0012).
    """
    if connection.vendor != "postgresql":
        return 0  # SQLite links at insert
    with transaction.atomic():
        connection.ensure_connection()
        with connection.connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])
            if not cursor.fetchone()[0]:
                return None
            cursor.execute(_PENDING_SQL, [limit or CHAIN_BATCH])
            rows = cursor.fetchall()
            if not rows:
                return 0
            ids = [row[0] for row in rows]
            canonical = [_canonical_row(*row[1:]) for row in rows]
            cursor.execute("SELECT count(*) FROM reviewdesk_audit_chain(%s, %s)", [ids, canonical])
            return cursor.fetchone()[0]


def has_unchained() -> bool:
    return AuditEvent.objects.filter(seq__isnull=True).exists()


def chain_all(*, budget_seconds: float = 20.0) -> int:
    """Link everything committed, batch after batch; what the chain_audit task runs.

    When another chainer holds the lock this returns at once: that chainer looks for
    unchained events again after each commit of its own, so an event committed while it held
    the lock (whose own trigger found the lock taken) is still linked by it.
    """
    total, deadline = 0, time.monotonic() + budget_seconds
    while True:
        linked = chain_pending()
        if linked is None:
            return total
        total += linked
        # Looked for after the COMMIT released the lock, in a new snapshot: see the docstring.
        if linked < CHAIN_BATCH and not has_unchained():
            return total
        if time.monotonic() > deadline:
            request_chaining()  # hand the rest to the next run rather than hold a worker
            return total


def chain_now(*, timeout: float = 30.0) -> int:
    """Link every unchained event this connection can see, waiting for a running chainer
    rather than leaving the work to it (manage.py chain_audit, tests, benches). Inside a
    transaction it links that transaction's own events too."""
    total, deadline = 0, time.monotonic() + timeout
    while has_unchained():
        linked = chain_pending()
        if linked is None:  # another chainer is at work: wait for its commit
            if time.monotonic() > deadline:
                raise TimeoutError("another audit chainer held the chain lock for too long")
            time.sleep(0.01)
            continue
        total += linked
        if not linked:
            break  # unchained rows this snapshot cannot see yet (another transaction's)
    return total


@dataclass(frozen=True)
class Unchained:
    count: int
    oldest_id: int | None = None
    oldest_at: Any = None  # created_at of the oldest unchained event

    def __str__(self) -> str:
        if not self.count:
            return "no events waiting to be chained"
        return (f"{self.count} event{'s' if self.count != 1 else ''} waiting to be chained since "
                f"{self.oldest_at.isoformat() if self.oldest_at else '?'} (lowest id {self.oldest_id})")


def unchained(*, older_than_seconds: float | None = None) -> Unchained:
    """The events still waiting to be linked (always none on SQLite). With ``older_than_seconds``
    only those older than that: a stalled chainer, not a broken chain."""
    from django.db.models import Count, Min

    waiting = AuditEvent.objects.filter(seq__isnull=True)
    if older_than_seconds is not None:
        waiting = waiting.filter(created_at__lt=timezone.now() - timedelta(seconds=older_than_seconds))
    found = waiting.aggregate(n=Count("id"), first=Min("id"), oldest=Min("created_at"))
    return Unchained(found["n"], found["first"], found["oldest"]) if found["n"] else Unchained(0)


# Commits ask for a chainer run through here: at most one task message per process every
# _TRIGGER_INTERVAL seconds, and always one sent after every commit that asked (a commit inside
# the interval arms a timer that sends at its end), so no event waits for beat's safety net.
# A commit inside a web request only notes the wish: the message goes once the response is out
# (request_finished, after the server has written it), so no reviewer waits for the broker.
# Publishing costs 1-3 ms, the first one in a process ~170 ms (the connection), and at fifty
# reviewers pressing Next at once a fifth of the claims paid it. Not a thread: in a sync worker a
# sending thread takes the GIL from the request being served (measured: Next's p95 doubled).
_TRIGGER_INTERVAL = 0.25
_trigger_lock = threading.Lock()
_trigger_timer: threading.Timer | None = None
_trigger_last = 0.0
_after_response = False


def request_chaining() -> None:
    global _after_response
    if in_web_request_var.get():
        _after_response = True
        return
    _request_chaining_now()


def send_after_response(**kwargs) -> None:
    """request_finished: send what a commit of this (or a concurrent) request asked for."""
    global _after_response
    if _after_response:
        _after_response = False
        _request_chaining_now()


def _request_chaining_now() -> None:
    global _trigger_timer, _trigger_last
    with _trigger_lock:
        if _trigger_timer is not None:
            return  # a send is already due after this commit
        wait = _trigger_last + _TRIGGER_INTERVAL - time.monotonic()
        if wait > 0:
            _trigger_timer = threading.Timer(wait, _send_from_timer)
            _trigger_timer.daemon = True
            _trigger_timer.start()
            return
        _trigger_last = time.monotonic()
    _send_chain_task()


def _send_from_timer() -> None:
    global _trigger_timer, _trigger_last
    with _trigger_lock:
        _trigger_timer = None
        _trigger_last = time.monotonic()
    _send_chain_task()


def _send_chain_task() -> None:
    try:
        from .tasks import chain_audit

        # A message older than this is moot: later commits and beat have sent newer ones.
        chain_audit.apply_async(expires=60)
    except Exception:  # noqa: BLE001 - a broker outage must not fail the committed change
        log.warning("could not send the audit chain task; beat's safety net links the events", exc_info=True)


def record(
    *,
    action: str,
    obj: Any = None,
    object_type: str = "",
    object_id: Any = "",
    actor=None,
    workflow_version=None,
    payload: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event (unchained on PostgreSQL: the chainer links it after the commit).
    Must run inside the transaction of the change it records."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit.record must be called inside the transaction of the change it records")
    # One word for each thing: an action outside the vocabulary is a bug, not a new action.
    action = AuditAction(action)
    if obj is not None:
        object_type = object_type or obj._meta.model_name
        object_id = object_id or obj.pk
    event = AuditEvent(
        # Truncated to whole microseconds as every database stores them, so the hash of the
        # stored row equals the hash computed here.
        created_at=timezone.now(),
        **_who(actor),
        action=str(action),
        object_type=object_type,
        object_id=str(object_id),
        workflow_version=workflow_version,
        payload=_as_stored(payload or {}),
        **_where_from(),
    )
    pending = _pending.get()
    if pending is not None:
        pending.append(event)  # inserted when the batch ends
    else:
        _append([event])
    return event


def _who(actor) -> dict[str, Any]:
    signed_in = actor is not None and actor.is_authenticated
    return {"actor": actor if signed_in else None, "actor_label": actor.get_username() if signed_in else "system"}


def _where_from() -> dict[str, Any]:
    return {"request_id": request_id_var.get(), "ip": _normalised_ip(client_ip_var.get())}


def insert_select_sql(*, object_id_sql: str, workflow_version_sql: str, payload_sql: str, from_sql: str) -> str:
    """record() for a service that changes rows and records each in the same SQL statement
    (a data-modifying CTE on PostgreSQL, where events are appended unchained): an
    ``INSERT ... SELECT`` of one event per row of ``from_sql``, the object id, workflow version
    and payload given as SQL expressions over those rows. It does not depend on the values, so a
    caller may build its statement once; the values come from insert_select_params() at each
    execution (named parameters ``audit_*``). The payload SQL must build the stored form
    (jsonb_build_object of plain values). Call appended() after executing it: the chainer is
    asked to run after the commit, as for record()."""
    return (
        "INSERT INTO workflows_auditevent (created_at, actor_id, actor_label, action, object_type, object_id, "
        "workflow_version_id, payload, request_id, ip) "
        f"SELECT %(audit_created_at)s, %(audit_actor_id)s, %(audit_actor_label)s, %(audit_action)s, "
        f"%(audit_object_type)s, ({object_id_sql})::text, {workflow_version_sql}, {payload_sql}, "
        f"%(audit_request_id)s, %(audit_ip)s::inet FROM {from_sql}"
    )


def insert_select_params(*, action: str, actor, object_type: str, created_at) -> dict[str, Any]:
    """The values of insert_select_sql's statement: actor, request id and client ip taken here
    exactly as record() takes them."""
    who, where = _who(actor), _where_from()
    return {
        "audit_created_at": created_at, "audit_actor_id": who["actor"].pk if who["actor"] else None,
        "audit_actor_label": who["actor_label"], "audit_action": str(AuditAction(action)),
        "audit_object_type": object_type, "audit_request_id": where["request_id"], "audit_ip": where["ip"],
    }


def appended() -> None:
    """Events were inserted by insert_select_sql: link them after the commit."""
    transaction.on_commit(request_chaining)


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    head: str
    broken_at: int | None = None   # id of the first bad event
    reason: str = ""


def verify_chain(events: Iterable[AuditEvent] | None = None) -> ChainReport:
    """Walk the chain in seq order and name the first broken link. Unchained events are not
    part of the chain yet: not checked here (``unchained()`` says how many wait)."""
    if events is None:
        walk = walk_chain()
        return ChainReport(walk.ok, walk.checked, walk.head, walk.broken_at, walk.reason)
    prev = GENESIS_HASH
    checked = 0
    for event in events:
        if event.prev_hash != prev:
            return ChainReport(False, checked, prev, event.id, "prev_hash does not match the previous event's hash")
        if compute_hash(prev, event) != event.hash:
            return ChainReport(False, checked, prev, event.id, "hash does not match the event's contents")
        prev = event.hash
        checked += 1
    return ChainReport(True, checked, prev)


# The same encoding as canonical_json, built once: json.dumps() with options builds a new
# encoder on every call, which is a third of the cost of verifying a row.
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode
_ROW_COLUMNS = ("id", "created_at", "actor_label", "actor_id", "action", "object_type", "object_id",
                "workflow_version_id", "payload", "request_id", "ip", "prev_hash", "hash")
# Plain tuples from a server-side cursor: no model instances, the payload parsed once from text,
# the time as a UTC timestamp (psycopg's C loader; Django's timestamptz loader runs Python per row).
_WALK_SQL = (
    "SELECT id, created_at AT TIME ZONE 'UTC', actor_label, actor_id, action, object_type, object_id, "
    "workflow_version_id, payload::text, request_id, host(ip), prev_hash, hash FROM workflows_auditevent "
    "WHERE seq > %s AND seq <= %s ORDER BY seq"
)
_WALK_BATCH = 20_000


@dataclass
class ChainWalk:
    """What walk_chain saw: the verdict, and where each watched event stood in the chain."""
    ok: bool
    checked: int          # events verified by this walk
    head: str             # hash of the last verified event (the start hash if none)
    head_id: int          # id of the last verified event (the start id if none)
    broken_at: int | None = None  # id of the first bad event
    reason: str = ""
    # watched id -> (its position in the chain counted from the start given, its stored hash)
    seen: dict[int, tuple[int, str]] | None = None
    head_seq: int = 0     # seq of the last verified event (the start seq if none)


def chain_head() -> tuple[int, int, str]:
    """(seq, id, hash) of the last linked event; (0, 0, genesis) for an empty chain."""
    head = AuditEvent.objects.filter(seq__isnull=False).order_by("-seq").values_list("seq", "id", "hash").first()
    return head or (0, 0, GENESIS_HASH)


def _rows(after_seq: int, up_to: int):
    if connection.vendor != "postgresql":
        queryset = (AuditEvent.objects.filter(seq__gt=after_seq, seq__lte=up_to).order_by("seq")
                    .values_list(*_ROW_COLUMNS))
        yield from queryset.iterator(chunk_size=_WALK_BATCH)
        return
    # A named (server-side) cursor on the driver's connection streams the rows in batches with
    # constant memory; it needs a transaction, which also gives the walk one snapshot.
    with transaction.atomic():
        connection.ensure_connection()
        with connection.connection.cursor(name=f"audit_walk_{id(object())}") as cursor:
            cursor.execute(_WALK_SQL, [after_seq, up_to])
            while rows := cursor.fetchmany(_WALK_BATCH):
                yield from rows  # the payload as text: _walk parses it


def walk_chain(*, after_seq: int = 0, prev_hash: str = GENESIS_HASH, after_id: int = 0, up_to: int | None = None,
               watch: Iterable[int] = ()) -> ChainWalk:
    """Verify the linked events after seq ``after_seq`` (event ``after_id``, whose hash is
    ``prev_hash``) up to seq ``up_to`` (default: the head now), in seq order, and name the first
    broken link. Same hash as compute_hash, recomputed from plain tuples."""
    if up_to is None:
        up_to = chain_head()[0]
    watched = set(watch)
    prev = prev_hash
    # The walk allocates a few short-lived objects per row and keeps none: the cyclic garbage
    # collector, triggered by allocation counts, would only cost time (a fifth of it).
    collecting = gc.isenabled()
    gc.disable()
    try:
        with closing(_rows(after_seq, up_to)) as rows:  # closed (its transaction ended) on an early return
            if connection.vendor == "postgresql":
                walk = _walk(rows, prev, after_id, watched, json.loads, "+00:00")
            else:
                walk = _walk(rows, prev, after_id, watched)
    finally:
        if collecting:
            gc.enable()
    if walk.ok:
        walk.head_seq = up_to if walk.checked else after_seq
        # seq is unique, so the walk saw every position in (after_seq, up_to] iff it counted
        # up_to - after_seq events; the chainer numbers without gaps, so a gap means an event was
        # removed and the links after it rewritten, or a seq changed behind the trigger.
        if walk.checked != up_to - after_seq:
            gap = _first_gap(after_seq, up_to)
            walk.ok, walk.broken_at = False, gap[0] if gap else None
            walk.reason = (f"seq {gap[1]} does not follow the previous event's seq {gap[2]} (an event was "
                           "removed or inserted)" if gap else "events are missing from the chain's positions")
    elif walk.head_id:
        walk.head_seq = AuditEvent.objects.filter(pk=walk.head_id).values_list("seq", flat=True).first() or after_seq
    else:
        walk.head_seq = after_seq
    return walk


def _first_gap(after_seq: int, up_to: int) -> tuple[int, int, int] | None:
    """(id, seq, previous seq) of the first event whose seq does not follow the one before it."""
    rows = (AuditEvent.objects.filter(seq__gt=after_seq, seq__lte=up_to).order_by("seq")
            .values_list("id", "seq").iterator(chunk_size=_WALK_BATCH))
    previous = after_seq
    for pk, seq in rows:
        if seq != previous + 1:
            return pk, seq, previous
        previous = seq
    return None


def _walk(rows, prev: str, head_id: int, watched: set[int], loads=None, utc: str = "") -> ChainWalk:
    """``loads``: parse the payload from text first; ``utc``: the offset to add to a naive UTC time."""
    seen: dict[int, tuple[int, str]] = {}
    checked = 0
    encode, sha256, string, int_repr = _encode, hashlib.sha256, json.encoder.encode_basestring, int.__repr__
    if loads is not None:  # the payload came as JSON text: encode it from its parsed value
        encode = lambda text, dumps=encode: dumps(loads(text))  # noqa: E731
    for (pk, created_at, actor_label, actor_id, action, object_type, object_id, workflow_version_id,
         payload, request_id, ip, row_prev, row_hash) in rows:
        if row_prev != prev:
            return ChainWalk(False, checked, prev, head_id, pk,
                             "prev_hash does not match the previous event's hash", seen)
        # canonical_json(_hashed_fields(event)) spelled out: the keys in sorted order, the fixed
        # fields encoded directly, only the payload through the encoder (test_audit_chain.py
        # checks the two agree).
        canonical = (
            f'{{"action":{string(action)},"actor":{string(actor_label)},'
            f'"actor_id":{"null" if actor_id is None else int_repr(actor_id)},'
            f'"created_at":{string(created_at.isoformat() + utc)},"ip":{"null" if ip is None else string(ip)},'
            f'"object_id":{string(object_id)},"object_type":{string(object_type)},"payload":{encode(payload)},'
            f'"request_id":{"null" if request_id is None else string(request_id)},'
            f'"workflow_version":{"null" if workflow_version_id is None else int_repr(workflow_version_id)}}}'
        )
        if sha256((prev + canonical).encode()).hexdigest() != row_hash:
            return ChainWalk(False, checked, prev, head_id, pk, "hash does not match the event's contents", seen)
        prev, head_id = row_hash, pk
        checked += 1
        if pk in watched:
            seen[pk] = (checked, row_hash)
    return ChainWalk(True, checked, prev, head_id, None, "", seen)


@transaction.atomic
def record_standalone(**kwargs) -> AuditEvent:
    """For events that record no other change (a denied access, an export)."""
    return record(**kwargs)
