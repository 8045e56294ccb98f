"""The audit chain: append, verify.

Each event's hash is SHA-256 over the previous hash and a canonical JSON encoding of the
event's facts, so changing, removing or reordering any row breaks every link after it.
"""
from __future__ import annotations

import gc
import hashlib
import ipaddress
import json
import json.encoder
from contextlib import closing, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable

from django.db import connection, transaction
from django.utils import timezone

from .models import AuditEvent
from .request_context import client_ip_var, request_id_var
from .vocab import AuditAction

GENESIS_HASH = "0" * 64
# Version of the canonical encoding hashed into the chain (canonical_json of _hashed_fields):
# JSON with sorted keys, separators "," and ":", UTF-8, ensure_ascii=False, default=str;
# created_at as datetime.isoformat() in UTC, integral numbers in payloads stored as ints.
# Exports name it in their manifest; tools/verify_export.py reproduces version 1.
ENCODING_VERSION = 1
HASH_ALGORITHM = "sha256"
# Any constant works; it only has to be the same for every writer of the chain.
_CHAIN_LOCK_KEY = 7_302_114_001


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
    # Appends must be serialised or two writers would both link to the same head. On
    # PostgreSQL a transaction-scoped advisory lock does that; SQLite serialises writers anyway.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])


# Events recorded inside ``batch()`` wait here and are appended together at its end.
_pending: ContextVar[list[AuditEvent] | None] = ContextVar("reviewdesk_audit_batch", default=None)


@contextmanager
def batch():
    """Append every event recorded inside this block at its end, under one chain lock.

    A service that records several events (a routed draft: generated, routed, released,
    auto-approved) would otherwise take the chain lock at its first event and hold it through
    the rest of its work until COMMIT, serialising every other writer behind it. Here the lock
    is taken once, as late as possible, and the head is read once. Must run inside the
    transaction of the change (as record() must); nothing is written if the block raises.
    """
    if _pending.get() is not None:  # nested: the outer batch appends
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
        _append_in_database(events)
        return
    _lock_chain()
    head = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS_HASH
    for event in events:
        event.prev_hash = head
        event.hash = head = compute_hash(head, event)
    AuditEvent.objects.bulk_create(events)


def _append_in_database(events: list[AuditEvent]) -> None:
    """Lock, read the head, hash and insert in one statement (migration 0004 says why); the
    canonical JSON is ours, so the database hashes exactly what verify_chain recomputes."""
    canonical = [canonical_json(_hashed_fields(event)) for event in events]
    rows = [
        {
            "created_at": event.created_at.isoformat(),
            "actor_id": event.actor_id,
            "actor_label": event.actor_label,
            "action": event.action,
            "object_type": event.object_type,
            "object_id": event.object_id,
            "workflow_version_id": event.workflow_version_id,
            "payload": event.payload,
            "request_id": event.request_id,
            "ip": event.ip,
        }
        for event in events
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT event_id, event_prev_hash, event_hash FROM reviewdesk_audit_append(%s, %s, %s::jsonb)",
            [_CHAIN_LOCK_KEY, canonical, json.dumps(rows)],
        )
        for event, (pk, prev_hash, digest) in zip(events, cursor.fetchall(), strict=True):
            event.pk, event.prev_hash, event.hash = pk, prev_hash, digest
            event._state.adding = False
            event._state.db = connection.alias


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
    """Append one event. Must run inside the transaction of the change it records."""
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
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_label=actor.get_username() if actor is not None and actor.is_authenticated else "system",
        action=str(action),
        object_type=object_type,
        object_id=str(object_id),
        workflow_version=workflow_version,
        payload=_as_stored(payload or {}),
        request_id=request_id_var.get(),
        ip=_normalised_ip(client_ip_var.get()),
    )
    pending = _pending.get()
    if pending is not None:
        pending.append(event)  # appended, with its hash, when the batch ends
    else:
        _append([event])
    return event


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    head: str
    broken_at: int | None = None
    reason: str = ""


def verify_chain(events: Iterable[AuditEvent] | None = None) -> ChainReport:
    """Walk the chain in id order and name the first broken link."""
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
    "SELECT id, created_at AT TIME ZONE 'UTC', actor_label, actor_id, action, object_type, object_id, workflow_version_id, "
    "payload::text, request_id, host(ip), prev_hash, hash FROM workflows_auditevent "
    "WHERE id > %s AND id <= %s ORDER BY id"
)
_WALK_BATCH = 20_000


@dataclass
class ChainWalk:
    """What walk_chain saw: the verdict, and where each watched event stood in the chain."""
    ok: bool
    checked: int          # events verified by this walk
    head: str             # hash of the last verified event (the start hash if none)
    head_id: int          # id of the last verified event (the start id if none)
    broken_at: int | None = None
    reason: str = ""
    # watched id -> (its position in the chain counted from the start given, its stored hash)
    seen: dict[int, tuple[int, str]] | None = None


def _rows(after_id: int, up_to: int):
    if connection.vendor != "postgresql":
        queryset = (AuditEvent.objects.filter(id__gt=after_id, id__lte=up_to).order_by("id")
                    .values_list(*_ROW_COLUMNS))
        yield from queryset.iterator(chunk_size=_WALK_BATCH)
        return
    # A named (server-side) cursor on the driver's connection streams the rows in batches with
    # constant memory; it needs a transaction, which also gives the walk one snapshot.
    with transaction.atomic():
        connection.ensure_connection()
        with connection.connection.cursor(name=f"audit_walk_{id(object())}") as cursor:
            cursor.execute(_WALK_SQL, [after_id, up_to])
            while rows := cursor.fetchmany(_WALK_BATCH):
                yield from rows  # the payload as text: _walk parses it


def walk_chain(*, after_id: int = 0, prev_hash: str = GENESIS_HASH, up_to: int | None = None,
               watch: Iterable[int] = ()) -> ChainWalk:
    """Verify the events after ``after_id`` (whose hash is ``prev_hash``) up to ``up_to``
    (default: the head now), in id order, and name the first broken link. Same hash as
    compute_hash, recomputed from plain tuples."""
    if up_to is None:
        up_to = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    watched = set(watch)
    prev = prev_hash
    # The walk allocates a few short-lived objects per row and keeps none: the cyclic garbage
    # collector, triggered by allocation counts, would only cost time (a fifth of it).
    collecting = gc.isenabled()
    gc.disable()
    try:
        with closing(_rows(after_id, up_to)) as rows:  # closed (its transaction ended) on an early return
            if connection.vendor == "postgresql":
                return _walk(rows, prev, after_id, watched, json.loads, "+00:00")
            return _walk(rows, prev, after_id, watched)
    finally:
        if collecting:
            gc.enable()


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
