"""The audit chain: append, verify.

Each event's hash is SHA-256 over the previous hash and a canonical JSON encoding of the
event's facts, so changing, removing or reordering any row breaks every link after it.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
from contextlib import contextmanager
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
        events = AuditEvent.objects.order_by("id").iterator(chunk_size=2000)
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


@transaction.atomic
def record_standalone(**kwargs) -> AuditEvent:
    """For events that record no other change (a denied access, an export)."""
    return record(**kwargs)
