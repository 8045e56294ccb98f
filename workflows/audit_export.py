"""Audit export: CSV or JSON Lines with a manifest that tools/verify_export.py checks offline.

Streaming method: a server-side (named) cursor on PostgreSQL, read in batches of
``BATCH`` rows, encoded in Python. Not ``COPY (SELECT ...) TO STDOUT``: the file must carry
each event's fields exactly as they were hashed (workflows.audit._hashed_fields and
canonical_json: Python's ``datetime.isoformat()``, Python's JSON number spelling, keys sorted
by code point). PostgreSQL's own text output differs on all three (jsonb orders keys by length,
prints numerics its own way, timestamps as ``2026-01-01 10:00:00+00``), so COPY's bytes would
have to be parsed and re-encoded in Python anyway, which is what costs; the cursor gives the
same constant memory (one batch at a time) with the chain's own encoding (canonical_json's
options, _hashed_fields' keys; created_at is formatted in SQL exactly as isoformat() does, see
_CREATED_AT). tests/unit/test_verify_export.py and tests/integration/test_audit_export.py hold
the file to audit.compute_hash.

Manifest hash: the file's SHA-256 is only known at the end of a stream. Every export is
bounded by ``upto``, the chain head id when the export was prepared (the page shows the
matching row count and carries ``upto`` into both links). The audit table is append-only, so
the same filters and the same bound always give the same rows and, with a deterministic
encoder, the same bytes: the manifest link computes the manifest in a second pass over those
rows, hashing without sending. No file is kept on the server, any web worker can answer it,
and the manifest of an altered export still names the hash of the untampered one.

CSV neutralisation: a cell starting with ``= + - @``, tab, CR or a single quote is prefixed with
one single quote, so spreadsheets do not run it as a formula. Quotes are escaped too, so the
rule is reversible: a verifier strips exactly one leading quote from any cell that starts with
one and gets the hashed value back.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django import forms
from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from . import audit
from .models import AuditEvent, Submission
from .vocab import AuditAction

FORMATS = ("csv", "jsonl")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}
# File columns, in order: the hashed fields under the names the hash uses, plus id and the links.
COLUMNS = ("id", "created_at", "actor", "actor_id", "action", "object_type", "object_id", "workflow_version",
           "payload", "request_id", "ip", "prev_hash", "hash")
BATCH = 5_000
_CHUNK = 256 * 1024  # bytes handed to the response at a time
# audit.canonical_json with the encoder built once (json.dumps builds one per call).
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
# created_at as text, spelt as Python's datetime.isoformat() spells a UTC time (what the hash
# covers: no fraction when the microseconds are 0): parsing a timestamp into a datetime and
# formatting it again was a fifth of the export's time.
_CREATED_AT = ("to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
               "CASE WHEN date_part('microseconds', created_at)::bigint %% 1000000 = 0 THEN '' "
               "ELSE to_char(created_at AT TIME ZONE 'UTC', '.US') END || '+00:00'")
_SQL_COLUMNS = (f"id, {_CREATED_AT}, actor_label, actor_id, action, object_type, object_id, workflow_version_id, "
                "payload::text, request_id, host(ip), prev_hash, hash")


class ExportFilterForm(forms.Form):
    """The filters of the compliance page and of the export (all optional)."""

    since = forms.DateTimeField(required=False, label="From",
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, label="Until (exclusive)",
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    workflow = forms.SlugField(required=False, max_length=100)
    actor = forms.CharField(required=False, max_length=150, label="Actor (username)")
    # As long as AuditEvent.action may be; CharField also refuses NUL characters, which
    # PostgreSQL cannot even compare with.
    action = forms.CharField(required=False, max_length=64)
    submission = forms.IntegerField(required=False, min_value=1, max_value=2**62, label="Submission #")

    def _within_years(self, name: str) -> datetime | None:
        """A time with an offset at either end of the calendar (0001-01-01T00:00+01:00) is a
        valid datetime that has no UTC time: refuse it here, with a message, instead of failing
        later when the page or the manifest spells it in UTC."""
        value = self.cleaned_data.get(name)
        if value is None:
            return None
        try:
            return timezone.localtime(value)
        except OverflowError:
            raise forms.ValidationError("Enter a time between the years 1 and 9999 (UTC).", code="out_of_range") from None

    def clean_since(self):
        return self._within_years("since")

    def clean_until(self):
        return self._within_years("until")

    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since >= until:
            raise forms.ValidationError("“From” must be before “Until”.")
        return data


class ExportRequestForm(ExportFilterForm):
    format = forms.ChoiceField(choices=[(f, f) for f in FORMATS])
    upto = forms.IntegerField(required=False, min_value=0, max_value=2**62)


@dataclass(frozen=True)
class ExportFilters:
    since: datetime | None = None
    until: datetime | None = None
    workflow: str = ""
    actor: str = ""
    action: str = ""
    submission: int | None = None

    @classmethod
    def from_cleaned(cls, data: dict[str, Any]) -> ExportFilters:
        return cls(since=data.get("since"), until=data.get("until"), workflow=data.get("workflow") or "",
                   actor=data.get("actor") or "", action=data.get("action") or "",
                   submission=data.get("submission"))

    @property
    def unfiltered(self) -> bool:
        return self == ExportFilters()

    def as_manifest(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "workflow": self.workflow or None,
            "actor": self.actor or None,
            "action": self.action or None,
            "submission": self.submission,
        }

    def as_event_payload(self) -> dict[str, Any]:
        """The filters without personal data: the actor as a user reference, not a name."""
        values = self.as_manifest()
        if self.actor:
            from django.contrib.auth import get_user_model

            user = get_user_model().objects.filter(username=self.actor).values_list("pk", flat=True).first()
            values["actor"] = {"user_id": user} if user else {"user_id": None, "known_user": False}
        return values

    def as_query(self) -> dict[str, str]:
        """The filters as GET parameters (for the download links)."""
        values = {
            "since": timezone.localtime(self.since).strftime("%Y-%m-%dT%H:%M:%S") if self.since else "",
            "until": timezone.localtime(self.until).strftime("%Y-%m-%dT%H:%M:%S") if self.until else "",
            "workflow": self.workflow, "actor": self.actor, "action": self.action,
            "submission": str(self.submission or ""),
        }
        return {k: v for k, v in values.items() if v}


def apply_filters(events: QuerySet[AuditEvent], filters: ExportFilters) -> QuerySet[AuditEvent]:
    if filters.since:
        events = events.filter(created_at__gte=filters.since)
    if filters.until:
        events = events.filter(created_at__lt=filters.until)
    if filters.workflow:
        events = events.filter(workflow_version__workflow__slug=filters.workflow)
    if filters.actor:
        events = events.filter(actor_label=filters.actor)
    if filters.action:
        events = events.filter(action=filters.action)
    if filters.submission:
        submission = Submission.objects.filter(pk=filters.submission).first()
        if submission is None:
            return events.none()
        task_ids = [str(pk) for pk in submission.review_tasks.values_list("pk", flat=True)]
        draft_ids = [str(pk) for pk in submission.drafts.values_list("pk", flat=True)]
        scope = Q(object_type="submission", object_id=str(submission.pk))
        if task_ids:
            scope |= Q(object_type="reviewtask", object_id__in=task_ids)
        if draft_ids:
            scope |= Q(object_type="draft", object_id__in=draft_ids)
        events = events.filter(scope)
    return events


def chain_head_id() -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def neutralise(cell: str) -> str:
    """A cell a spreadsheet would run as a formula gets one leading single quote (reversible)."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def csv_cells(pk: int, fields: dict[str, Any], prev_hash: str, digest: str) -> list:
    """One CSV record: None as an empty cell (only actor_id, workflow_version and ip can be
    None, and none of them can be empty otherwise), payload as canonical JSON, text neutralised."""
    return [
        pk, neutralise(fields["created_at"]), neutralise(fields["actor"]),
        "" if fields["actor_id"] is None else fields["actor_id"],
        neutralise(fields["action"]), neutralise(fields["object_type"]), neutralise(fields["object_id"]),
        "" if fields["workflow_version"] is None else fields["workflow_version"],
        neutralise(_encode(fields["payload"])), neutralise(fields["request_id"]),
        "" if fields["ip"] is None else neutralise(fields["ip"]), prev_hash, digest,
    ]


def jsonl_line(pk: int, fields: dict[str, Any], prev_hash: str, digest: str) -> str:
    return _encode({"id": pk, **fields, "prev_hash": prev_hash, "hash": digest}) + "\n"


@dataclass
class Export:
    """One export: the filtered events with id <= upto, in id order, as CSV or JSON Lines.

    Iterate ``chunks()`` once; afterwards ``sha256``, ``row_count``, first/last hash are set.
    """

    format: str
    filters: ExportFilters = field(default_factory=ExportFilters)
    upto: int | None = None
    row_count: int = 0
    first_id: int | None = None
    last_id: int | None = None
    first_hash: str | None = None
    first_prev_hash: str | None = None
    last_hash: str | None = None
    complete: bool = False
    _digest: Any = field(default_factory=hashlib.sha256, repr=False)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        if self.upto is None:
            self.upto = chain_head_id()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def queryset(self) -> QuerySet[AuditEvent]:
        return apply_filters(AuditEvent.objects.filter(id__lte=self.upto), self.filters).order_by("id")

    def count(self) -> int:
        return self.queryset().count()

    def _rows(self) -> Iterator[tuple]:
        """(id, _hashed_fields, prev_hash, hash) in id order, one batch in memory at a time."""
        if connection.vendor != "postgresql":
            # The embedded SQLite default (make run): the ORM's own chunked iterator and the
            # very function the chain hashes with; the SQL below is PostgreSQL's.
            for event in self.queryset().iterator(chunk_size=BATCH):
                yield event.pk, audit._hashed_fields(event), event.prev_hash, event.hash
            return
        try:
            sql, params = self.queryset().values("id").query.sql_with_params()
        except EmptyResultSet:  # a filter that can match nothing (e.g. .none())
            return
        query = (f"SELECT {_SQL_COLUMNS} FROM workflows_auditevent WHERE id IN ({sql}) ORDER BY id"
                 if not self.filters.unfiltered else
                 f"SELECT {_SQL_COLUMNS} FROM workflows_auditevent WHERE id <= %s ORDER BY id")
        params = params if not self.filters.unfiltered else (self.upto,)
        loads = json.loads
        # A named cursor streams in batches and needs a transaction, which also gives the
        # whole export one snapshot.
        with transaction.atomic():
            connection.ensure_connection()
            with connection.connection.cursor(name=f"audit_export_{id(self)}") as cursor:
                cursor.itersize = BATCH
                cursor.execute(query, params)
                while batch := cursor.fetchmany(BATCH):
                    for (pk, created_at, actor_label, actor_id, action, object_type, object_id,
                         workflow_version_id, payload, request_id, ip, prev_hash, digest) in batch:
                        # Exactly audit._hashed_fields (tests/unit/test_verify_export.py and the
                        # integration tests check the file against audit.compute_hash).
                        fields = {
                            "created_at": created_at, "actor": actor_label, "actor_id": actor_id,
                            "action": action, "object_type": object_type, "object_id": object_id,
                            "workflow_version": workflow_version_id, "payload": loads(payload),
                            "request_id": request_id, "ip": ip,
                        }
                        yield pk, fields, prev_hash, digest

    def chunks(self) -> Iterator[bytes]:
        buffer = io.StringIO()
        writer = None
        if self.format == "csv":
            # CRLF as RFC 4180 has it; it also makes the csv module quote a lone CR or LF in a cell.
            writer = csv.writer(buffer, lineterminator="\r\n")
            writer.writerow(COLUMNS)
        with closing(self._rows()) as rows:  # an abandoned stream ends its cursor and transaction
            yield from self._encode(rows, buffer, writer)
        if buffer.tell():
            yield self._take(buffer)
        self.complete = True

    def _encode(self, rows, buffer: io.StringIO, writer) -> Iterator[bytes]:
        for pk, fields, prev_hash, digest in rows:
            if self.first_id is None:
                self.first_id, self.first_hash, self.first_prev_hash = pk, digest, prev_hash
            self.last_id, self.last_hash = pk, digest
            self.row_count += 1
            if writer is not None:
                writer.writerow(csv_cells(pk, fields, prev_hash, digest))
            else:
                buffer.write(jsonl_line(pk, fields, prev_hash, digest))
            if buffer.tell() >= _CHUNK:
                yield self._take(buffer)

    def _take(self, buffer: io.StringIO) -> bytes:
        data = buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
        self._digest.update(data)
        return data

    def run(self) -> Export:
        """Compute everything without keeping the bytes (the manifest's second pass)."""
        for _ in self.chunks():
            pass
        return self

    def manifest(self, *, exported_by: str, file_name: str = "") -> dict[str, Any]:
        if not self.complete:
            raise RuntimeError("the manifest is known only once the whole export has been produced")
        head = AuditEvent.objects.filter(id__lte=self.upto).order_by("-id").values_list("id", "hash").first()
        return {
            "manifest_version": 1,
            "file": file_name,
            "format": self.format,
            "columns": list(COLUMNS),
            "file_sha256": self.sha256,
            "row_count": self.row_count,
            "hash_algorithm": audit.HASH_ALGORITHM,
            "encoding_version": audit.ENCODING_VERSION,
            "genesis_hash": audit.GENESIS_HASH,
            "csv_neutralisation": "cells starting with = + - @ TAB CR or ' carry one extra leading '",
            "filters": self.filters.as_manifest(),
            "filtered": not self.filters.unfiltered,
            "exported_by": exported_by,
            "exported_at": timezone.now().isoformat(),
            "upto_id": self.upto,
            "first_id": self.first_id,
            "last_id": self.last_id,
            "first_prev_hash": self.first_prev_hash,
            "first_hash": self.first_hash,
            "last_hash": self.last_hash,
            "chain_head": {"id": head[0], "hash": head[1]} if head else {"id": 0, "hash": audit.GENESIS_HASH},
        }


def record_export(export: Export, *, actor=None, channel: str) -> AuditEvent:
    """The export as an audit event (no personal data: the actor filter becomes a user id)."""
    return audit.record_standalone(
        action=AuditAction.AUDIT_EXPORTED,
        object_type="audit_export",
        object_id=f"{export.format}:{export.upto}",
        actor=actor,
        payload={
            "format": export.format,
            "filters": export.filters.as_event_payload(),
            "upto_id": export.upto,
            "row_count": export.row_count,
            "file_sha256": export.sha256 if export.complete else None,
            "complete": export.complete,
            "channel": channel,
        },
    )


def file_name(export: Export) -> str:
    return f"audit-{export.upto}-{'filtered' if not export.filters.unfiltered else 'all'}.{export.format}"


def write_export(path: str, export: Export, *, exported_by: str) -> dict[str, Any]:
    """Write FILE and FILE.manifest.json (the command's single pass); returns the manifest."""
    import os

    with open(path, "wb") as out:
        for chunk in export.chunks():
            out.write(chunk)
    manifest = export.manifest(exported_by=exported_by, file_name=os.path.basename(path))
    with open(f"{path}.manifest.json", "w", encoding="utf-8") as out:
        json.dump(manifest, out, indent=2, ensure_ascii=False)
        out.write("\n")
    return manifest
