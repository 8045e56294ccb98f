"""The audit chain at scale: checkpointed verification and anchors outside the database.

Checkpoints. A periodic task (``verify_checkpoint``) verifies only the events appended since the
last checkpoint, starting from the id and hash that checkpoint recorded, and records the new
verified head as an ``audit.verified`` event (payload: from_id, to_id, checked, count, head hash,
ok, broken_at, reason). The checkpoint is itself an event of the chain, so the next run verifies
it too. No table, no migration: the latest ``audit.verified`` event with ``ok`` is the checkpoint.

Anchors. A chain alone does not stop someone with database rights: deleting the newest rows, or
changing a row and recomputing every later hash with the app's own function, both verify as
"ok". An anchor is the verified head (event id, hash, count up to it, time) signed with
HMAC-SHA256 under REVIEWDESK_AUDIT_ANCHOR_KEY (a key the database does not hold) and written
where the database cannot change it, through a small interface (AnchorTarget). ``verify_audit``
then checks the chain against the latest valid anchor: the anchored event must still be there,
with the anchored hash, at the anchored position. docs/COMPLIANCE.md says what that proves and
what it does not.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import audit
from .models import AuditEvent
from .vocab import AuditAction

log = logging.getLogger(__name__)

ANCHOR_VERSION = 1
_ANCHOR_FIELDS = ("version", "event_id", "hash", "count", "anchored_at")


class AnchorError(Exception):
    """An anchor cannot be written (no key, no target) or read."""


# --- checkpoints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    event_id: int            # id of the audit.verified event that recorded it
    recorded_at: datetime.datetime
    from_id: int
    to_id: int               # last verified event id (0: empty chain)
    head: str                # its hash
    count: int               # events in the chain from genesis up to and including to_id
    checked: int             # events this run verified
    ok: bool
    broken_at: int | None
    reason: str
    from_seq: int = 0        # chain positions (seq) of the same two events
    to_seq: int = 0
    waiting: int = 0         # events not linked yet when it ran (not part of the chain yet)


def _checkpoint(event: AuditEvent) -> Checkpoint:
    p = event.payload
    # Checkpoints recorded before seq existed: their positions are their counts.
    return Checkpoint(event.pk, event.created_at, p.get("from_id", 0), p.get("to_id", 0),
                      p.get("head", audit.GENESIS_HASH), p.get("count", 0), p.get("checked", 0),
                      bool(p.get("ok")), p.get("broken_at"), p.get("reason", ""),
                      p.get("from_seq", p.get("count", 0) - p.get("checked", 0)), p.get("to_seq", p.get("count", 0)),
                      p.get("waiting", 0))


def last_checkpoint(*, ok_only: bool = False) -> Checkpoint | None:
    events = AuditEvent.objects.filter(action=AuditAction.AUDIT_VERIFIED)
    if ok_only:
        events = events.filter(payload__ok=True)
    event = events.order_by("-id").first()
    return _checkpoint(event) if event else None


def verify_checkpoint() -> Checkpoint:
    """Verify the events since the last good checkpoint and record the result as audit.verified.

    A checkpoint whose event was changed since (its id gone or its hash different) is not a
    starting point: the run starts again from genesis.
    """
    # Link what is committed first (returns at once if a chainer is at work), so a checkpoint, and
    # the anchor written from it, covers every event committed before it ran.
    audit.chain_all()
    start = last_checkpoint(ok_only=True)
    after_id, after_seq, prev, count = 0, 0, audit.GENESIS_HASH, 0
    if start and start.to_id:
        stored = AuditEvent.objects.filter(pk=start.to_id).values_list("hash", "seq").first()
        if stored is not None and stored[0] == start.head and stored[1] is not None:
            after_id, after_seq, prev, count = start.to_id, stored[1], start.head, start.count
    # Only linked events are verified: the ones still waiting for the chainer are counted, and
    # verified by the next run once linked.
    waiting = audit.unchained().count
    walk = audit.walk_chain(after_seq=after_seq, after_id=after_id, prev_hash=prev)
    payload = {
        "from_id": after_id, "to_id": walk.head_id, "from_seq": after_seq, "to_seq": walk.head_seq,
        "checked": walk.checked, "count": count + walk.checked,
        "head": walk.head, "ok": walk.ok, "broken_at": walk.broken_at, "reason": walk.reason, "waiting": waiting,
    }
    event = audit.record_standalone(action=AuditAction.AUDIT_VERIFIED, object_type="audit_chain",
                                    object_id=walk.head_id, payload=payload)
    return _checkpoint(event)


# --- anchors -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    event_id: int
    hash: str
    count: int
    anchored_at: str
    version: int = ANCHOR_VERSION
    location: str = ""       # where it was read from or written to (not signed)

    def body(self) -> dict:
        return {name: getattr(self, name) for name in _ANCHOR_FIELDS}


def _key() -> bytes:
    key = settings.REVIEWDESK_AUDIT_ANCHOR_KEY
    if not key:
        raise AnchorError(
            "REVIEWDESK_AUDIT_ANCHOR_KEY is not set: refusing to write or check anchors. Set it to a "
            "long random secret that the database (and its backups) never holds."
        )
    return key.encode()


def sign(body: dict, key: bytes) -> str:
    return hmac.new(key, audit.canonical_json(body).encode(), hashlib.sha256).hexdigest()


@dataclass
class AnchorScan:
    """Every anchor a target holds: the valid ones, and the ones refused (named, with why)."""
    valid: list[Anchor] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)

    @property
    def latest(self) -> Anchor | None:
        return max(self.valid, key=lambda a: (a.event_id, a.anchored_at), default=None)


class AnchorTarget(Protocol):
    """Somewhere the database cannot change. A target only appends and lists; it never rewrites.

    Other targets fit behind these two methods (docs/COMPLIANCE.md): an object store bucket with
    object lock in compliance mode (one object per anchor, put with If-None-Match: *), or an
    e-mail to a compliance mailbox (write only; the officer keeps the messages).
    """

    name: str

    def write(self, anchor: Anchor, signature: str) -> str: ...

    def scan(self, key: bytes) -> AnchorScan: ...


def _anchor_file_name(anchor: Anchor) -> str:
    stamp = anchor.anchored_at.replace("-", "").replace(":", "").replace("+0000", "Z")
    return f"anchor-{stamp}-{anchor.event_id}.json"


class DirectoryTarget:
    """One file per anchor, created with O_EXCL (never overwritten), read-only, fsynced."""

    name = "directory"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def write(self, anchor: Anchor, signature: str) -> str:
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / _anchor_file_name(anchor)
        data = json.dumps({**anchor.body(), "hmac_sha256": signature}, sort_keys=True, indent=1) + "\n"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            os.write(fd, data.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return str(target)

    def scan(self, key: bytes) -> AnchorScan:
        scan = AnchorScan()
        if not self.path.is_dir():
            return scan
        for file in sorted(self.path.glob("anchor-*.json")):
            try:
                data = json.loads(file.read_text())
                body = {name: data[name] for name in _ANCHOR_FIELDS}
                given = data["hmac_sha256"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                scan.refused.append((str(file), f"unreadable ({type(exc).__name__}: {exc})"))
                continue
            if not isinstance(given, str) or not hmac.compare_digest(given, sign(body, key)):
                scan.refused.append((str(file), "HMAC does not match (altered, or signed with another key)"))
                continue
            scan.valid.append(Anchor(**body, location=str(file)))
        return scan


class EmailTarget:
    """The signed anchor e-mailed to a compliance address list through Django's e-mail backend:
    the JSON in the body and as an attachment named as a directory anchor would be, so an officer
    can save the attachments into a folder and check the chain against them
    (``verify_audit --anchor-dir FOLDER``). Write-only: ReviewDesk cannot read a mailbox back, so
    ``scan`` finds nothing; what it proves lives in the recipients' mailboxes (docs/COMPLIANCE.md)."""

    name = "email"

    def __init__(self, recipients: list[str], sender: str | None = None):
        self.recipients = list(recipients)
        self.sender = sender

    def write(self, anchor: Anchor, signature: str) -> str:
        from django.core.mail import EmailMessage

        data = json.dumps({**anchor.body(), "hmac_sha256": signature}, sort_keys=True, indent=1) + "\n"
        message = EmailMessage(
            subject=f"ReviewDesk audit anchor: event {anchor.event_id} ({anchor.count} events)",
            body=(
                f"ReviewDesk anchored its audit chain at {anchor.anchored_at}.\n\n"
                f"Anchored event: {anchor.event_id}\nEvents in the chain up to it: {anchor.count}\n"
                f"Its hash: {anchor.hash}\n\nThe signed anchor (HMAC-SHA256) follows and is attached. Keep this "
                "message where the people who run ReviewDesk and its database cannot change or delete it. To check "
                "the chain against it, save the attachment into a folder and run\n"
                "  python manage.py verify_audit --anchor-dir FOLDER\n\n" + data
            ),
            from_email=self.sender,
            to=self.recipients,
        )
        message.attach(_anchor_file_name(anchor), data, "application/json")
        message.send(fail_silently=False)
        return f"email:{','.join(self.recipients)}"

    def scan(self, key: bytes) -> AnchorScan:
        return AnchorScan()


class MultiTarget:
    """Writes each anchor to every configured target; reads back from those that can be read.

    An anchor counts as written when at least one target took it; the targets that failed are
    named (``failures``) so the audit.anchored event and the log say which copy is missing.
    """

    name = "multi"

    def __init__(self, targets: list[AnchorTarget]):
        self.targets = list(targets)
        self.name = "+".join(target.name for target in self.targets)
        self.failures: list[str] = []

    def write(self, anchor: Anchor, signature: str) -> str:
        self.failures = []
        written = []
        for target in self.targets:
            try:
                written.append(target.write(anchor, signature))
            except OSError as exc:  # smtplib's errors are OSErrors too
                self.failures.append(f"{target.name}: {type(exc).__name__}: {exc}")
        if not written:
            raise OSError("; ".join(self.failures))
        return "; ".join(written)

    def scan(self, key: bytes) -> AnchorScan:
        scan = AnchorScan()
        for target in self.targets:
            found = target.scan(key)
            scan.valid.extend(found.valid)
            scan.refused.extend(found.refused)
        return scan


def default_target() -> AnchorTarget:
    """The directory always; the e-mail target too when REVIEWDESK_AUDIT_ANCHOR_EMAIL is set."""
    directory = DirectoryTarget(settings.REVIEWDESK_AUDIT_ANCHOR_DIR)
    if not settings.REVIEWDESK_AUDIT_ANCHOR_EMAIL:
        return directory
    return MultiTarget([directory, EmailTarget(settings.REVIEWDESK_AUDIT_ANCHOR_EMAIL)])


@dataclass(frozen=True)
class AnchorCheck:
    ok: bool
    anchor: Anchor | None
    problems: list[str]


def check_against_anchor(walk: audit.ChainWalk | None, scan: AnchorScan) -> AnchorCheck:
    """The chain against the latest valid anchor. ``walk`` must be a walk from genesis watching
    the anchor's event id (None: look the event up directly, for a quick check)."""
    problems = [f"anchor {location} refused: {why}" for location, why in scan.refused]
    anchor = scan.latest
    if anchor is None:
        return AnchorCheck(not problems, None, problems)
    # Not seen (no walk, or the walk stopped before the anchored event): looked up directly.
    seen = walk.seen.get(anchor.event_id) if walk is not None and walk.seen is not None else None
    if seen is None:
        found = AuditEvent.objects.filter(pk=anchor.event_id).values_list("hash", "seq").first()
        stored = found[0] if found else None
        # Its position in the chain: the linked events up to its seq (the count, not the seq
        # itself, which is not hashed).
        position = (AuditEvent.objects.filter(seq__lte=found[1]).count()
                    if found and found[1] is not None else None)
    else:
        position, stored = seen
    if stored is None:
        problems.append(
            f"anchored event {anchor.event_id} is missing (anchor {anchor.location}): events were deleted "
            f"(a cut tail?)"
        )
    elif stored != anchor.hash:
        problems.append(
            f"anchor mismatch at event {anchor.event_id}: the chain has hash {stored}, the anchor "
            f"{anchor.location} says {anchor.hash} (history before it was rewritten and re-hashed)"
        )
    elif position != anchor.count:
        problems.append(
            f"anchor count mismatch at event {anchor.event_id}: {position} events up to it, the anchor "
            f"{anchor.location} says {anchor.count} (events were removed or inserted before it)"
        )
    return AnchorCheck(not problems, anchor, problems)


def anchor_head(target: AnchorTarget | None = None) -> Anchor:
    """Verify since the last checkpoint, check the previous anchor, then anchor the verified head.

    Refuses (AnchorError) without a key, on a broken chain, or when the previous anchor no
    longer matches the chain: anchoring then would bless the tampered history.
    """
    key = _key()
    target = target or default_target()
    scan = target.scan(key)
    previous = check_against_anchor(None, scan)
    if not previous.ok:
        raise AnchorError("refusing to anchor: " + "; ".join(previous.problems))
    checkpoint = verify_checkpoint()
    if not checkpoint.ok:
        raise AnchorError(
            f"refusing to anchor a broken chain: event {checkpoint.broken_at}: {checkpoint.reason}"
        )
    anchor = Anchor(event_id=checkpoint.to_id, hash=checkpoint.head, count=checkpoint.count,
                    anchored_at=timezone.now().strftime("%Y-%m-%dT%H:%M:%S.%f+0000"))
    try:
        location = target.write(anchor, sign(anchor.body(), key))
    except OSError as exc:
        raise AnchorError(f"cannot write the anchor ({target.name}): {exc}") from exc
    anchor = Anchor(**anchor.body(), location=location)
    failures = list(getattr(target, "failures", []))
    if failures:
        log.error("anchor of event %s written, but not to every target: %s", anchor.event_id, "; ".join(failures))
    payload = {**anchor.body(), "target": target.name, "location": location}
    if failures:
        payload["failed_targets"] = [failure.split(":", 1)[0] for failure in failures]
    with transaction.atomic():
        audit.record(action=AuditAction.AUDIT_ANCHORED, object_type="audit_chain", object_id=anchor.event_id,
                     payload=payload)
    return anchor


def last_anchored_event() -> dict | None:
    event = AuditEvent.objects.filter(action=AuditAction.AUDIT_ANCHORED).order_by("-id").first()
    return {**event.payload, "recorded_at": event.created_at} if event else None


# --- the full walk -------------------------------------------------------------------------


@dataclass(frozen=True)
class FullReport:
    walk: audit.ChainWalk
    anchors: AnchorCheck | None   # None: no key, anchors not checked
    note: str = ""
    # Events still unchained after audit.CHAIN_LAG_WARNING_SECONDS: the chainer is not running.
    # Not a broken chain (they are not in it yet), but a problem: reported as one.
    stale: audit.Unchained = field(default_factory=lambda: audit.Unchained(0))

    @property
    def ok(self) -> bool:
        return self.walk.ok and (self.anchors is None or self.anchors.ok) and not self.stale.count

    def as_dict(self) -> dict:
        return {"walk": asdict(self.walk) | {"seen": None}, "note": self.note}


def verify_all(target: AnchorTarget | None = None) -> FullReport:
    """Walk the whole chain from genesis and check it against the latest valid anchor."""
    target = target or default_target()
    stale = audit.unchained(older_than_seconds=audit.CHAIN_LAG_WARNING_SECONDS)
    try:
        key = _key()
    except AnchorError as exc:
        return FullReport(audit.walk_chain(), None, f"anchors not checked: {exc}", stale)
    scan = target.scan(key)
    latest = scan.latest
    walk = audit.walk_chain(watch=[latest.event_id] if latest else [])
    return FullReport(walk, check_against_anchor(walk, scan), stale=stale)
