"""Audit export: CSV or JSON Lines with a manifest that tools/verify_export.py checks offline.

Streaming method: a server-side (named) cursor on PostgreSQL, read in batches of ``BATCH``
rows, the next batch fetched while this one is encoded. Not ``COPY (SELECT ...) TO STDOUT``:
the file must carry each event's fields exactly as they were hashed (workflows.audit.
_hashed_fields and canonical_json: Python's ``datetime.isoformat()``, Python's JSON number
spelling, keys sorted by code point), and PostgreSQL cannot spell every stored payload that way
(jsonb orders keys by length and prints numerics its own way). So PostgreSQL builds each line
around its payload (_FAST_SQL: every other field is text, an integer, an address or a formatted
time) and Python canonicalises only the payloads, a batch at a time; rows whose text would need
escaping go through the reference encoder (``_reference_rows``, row by row, also used on
SQLite). tests/unit/test_verify_export.py and tests/integration/test_audit_export.py hold the
file to audit.compute_hash and the two encoders to the same bytes.

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
import json.encoder
import queue
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
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
# seq (the chain position, the file's order) since manifest version 2; it is not hashed.
COLUMNS = ("id", "seq", "created_at", "actor", "actor_id", "action", "object_type", "object_id",
           "workflow_version", "payload", "request_id", "ip", "prev_hash", "hash")
MANIFEST_VERSION = 2
BATCH = 5_000
# audit.canonical_json with the encoder built once (json.dumps builds one per call).
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
_CSV_HEADER = ",".join(COLUMNS) + "\r\n"  # no column name needs quoting
# created_at as text, spelt as Python's datetime.isoformat() spells a UTC time (what the hash
# covers: no fraction when the microseconds are 0): parsing a timestamp into a datetime and
# formatting it again was a fifth of the export's time.
_CREATED_AT = ("to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
               "CASE WHEN date_part('microseconds', created_at)::bigint %% 1000000 = 0 THEN '' "
               "ELSE to_char(created_at AT TIME ZONE 'UTC', '.US') END || '+00:00'")
_SQL_COLUMNS = (f"id, seq, {_CREATED_AT}, actor_label, actor_id, action, object_type, object_id, workflow_version_id, "
                "payload::text, request_id, host(ip), prev_hash, hash")

# --- the fast path (PostgreSQL) ------------------------------------------------------------
# PostgreSQL writes each line around its payload: `prefix` (every field before "payload") and
# `suffix` (every field after it) are built in SQL with plain quoting, and only the payload is
# canonicalised in Python. Plain quoting is the canonical encoding only for text that needs no
# escaping, so the query also returns every free-text column joined by "|" (`check`), and a
# batch whose check text has anything that would be escaped (JSON: a quote, a backslash, a
# control character; CSV: also a comma or a cell starting with a formula character) has those
# rows re-encoded one by one by the reference path (_reference_rows + jsonl_line/csv_cells).
# tests/integration/test_audit_export.py holds both paths to the same bytes, on every
# character that either path treats specially.
_CREATED_AT_TEXT = ("replace(to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), "
                    "'.000000', '') || '+00:00'")  # isoformat(): no fraction at whole seconds
_CHECK = "concat_ws('|', '', action, actor_label, object_type, object_id, request_id, prev_hash, hash)"
_FAST_SQL = {
    "jsonl": (
        "concat('{\"action\":\"', action, '\",\"actor\":\"', actor_label, '\",\"actor_id\":', "
        "COALESCE(actor_id::text, 'null'), ',\"created_at\":\"', " + _CREATED_AT_TEXT + ", '\",\"hash\":\"', hash, "
        "'\",\"id\":', id, ',\"ip\":', COALESCE('\"' || host(ip) || '\"', 'null'), ',\"object_id\":\"', object_id, "
        "'\",\"object_type\":\"', object_type, '\",\"payload\":')",
        "concat(',\"prev_hash\":\"', prev_hash, '\",\"request_id\":\"', request_id, '\",\"seq\":', seq, "
        "',\"workflow_version\":', COALESCE(workflow_version_id::text, 'null'), E'}\\n')",
    ),
    "csv": (
        "concat(id, ',', seq, ',', " + _CREATED_AT_TEXT + ", ',', actor_label, ',', actor_id, ',', action, ',', object_type, "
        "',', object_id, ',', workflow_version_id, ',')",
        "concat(',', request_id, ',', host(ip), ',', prev_hash, ',', hash, E'\\r\\n')",
    ),
}
# Which check texts need the reference path. "|" joins the columns, so "|" followed by a
# formula character is a cell that starts with one (a false alarm only costs speed); anything
# str.isprintable() refuses (control characters, among others) needs it too.
_JSON_SPECIAL = ('"', "\\")
_CSV_SPECIAL = ('"', "\\", ",", "|=", "|+", "|-", "|@", "|'")
# canonical_json of a parsed payload without JSONEncoder.encode's per-call set-up (it builds a
# new C encoder on every call); the same C encoder and options, so the same bytes.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
if _c_make_encoder is not None:
    _c_encoder = _c_make_encoder(None, str, json.encoder.encode_basestring, None, ":", ",", True, False, True)

    def _canonical_batch(values: list[Any]) -> list[str]:
        """canonical_json of each value, encoded in one call: the values interleaved with a NUL
        string, whose encoding ``"\\u0000"`` between commas cannot occur inside an encoded
        value (PostgreSQL refuses NUL in JSON, and an encoded backslash is doubled)."""
        if len(values) < 2:
            return [_encode(value) for value in values]
        interleaved: list[Any] = ["\x00"] * (2 * len(values) - 1)
        interleaved[0::2] = values
        parts = "".join(_c_encoder(interleaved, 0))[1:-1].split(_BETWEEN)
        return parts if len(parts) == len(values) else [_encode(value) for value in values]
else:  # pragma: no cover - an interpreter without the C accelerator
    def _canonical_batch(values: list[Any]) -> list[str]:
        return [_encode(value) for value in values]
_BETWEEN = ',"\\u0000",'


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
    """The chain position (seq) of the last linked event: the bound of an export (the name is
    older than seq; exports are bounded by chain position, not id)."""
    return audit.chain_head()[0]


def neutralise(cell: str) -> str:
    """A cell a spreadsheet would run as a formula gets one leading single quote (reversible)."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def csv_cells(pk: int, fields: dict[str, Any], prev_hash: str, digest: str, seq: int) -> list:
    """One CSV record: None as an empty cell (only actor_id, workflow_version and ip can be
    None, and none of them can be empty otherwise), payload as canonical JSON, text neutralised."""
    return [
        pk, seq, neutralise(fields["created_at"]), neutralise(fields["actor"]),
        "" if fields["actor_id"] is None else fields["actor_id"],
        neutralise(fields["action"]), neutralise(fields["object_type"]), neutralise(fields["object_id"]),
        "" if fields["workflow_version"] is None else fields["workflow_version"],
        neutralise(_encode(fields["payload"])), neutralise(fields["request_id"]),
        "" if fields["ip"] is None else neutralise(fields["ip"]), prev_hash, digest,
    ]


def _prefetched(cursor, size: int) -> Iterator[list[tuple]]:
    """The cursor's batches, the next one fetched by a helper thread while the caller encodes
    this one, so PostgreSQL builds lines while Python canonicalises payloads (psycopg waits
    for the server without holding the GIL). At most three batches exist at once."""
    batches: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def fetch() -> None:
        try:
            while not stop.is_set():
                batch = cursor.fetchmany(size)
                batches.put(batch)
                if not batch:
                    return
        except BaseException as exc:  # handed to the caller, raised there
            batches.put(exc)

    thread = threading.Thread(target=fetch, name="audit-export-fetch", daemon=True)
    thread.start()
    try:
        while True:
            item = batches.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                return
            yield item
    finally:
        # An abandoned stream: let the helper finish its fetch and go before the cursor closes.
        stop.set()
        while thread.is_alive():
            try:
                batches.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def _plain(text: str, special: tuple[str, ...]) -> bool:
    """True when plain quoting of ``text`` is its canonical (and CSV) encoding."""
    return text.isprintable() and not any(needle in text for needle in special)


def _json_cells(texts: list[str]) -> list[str]:
    """csv_cell of each canonical JSON text, the quotes of the whole batch doubled at once.
    JSON text never holds a raw CR or LF and can only start with { [ " - a digit or a letter,
    so a cell is quoted iff it holds a quote or a comma, and neutralised iff it starts with -."""
    if len(texts) < 2:
        return [csv_cell(text) for text in texts]
    # NUL cannot occur in JSON text (it is escaped), so it separates the cells safely.
    doubled = "\x00".join(texts).replace('"', '""').split("\x00")
    return ['"' + cell + '"' if '"' in cell or "," in cell else ("'" + cell if cell[:1] == "-" else cell)
            for cell in doubled]


def csv_cell(text: str) -> str:
    """One cell as csv.writer (excel dialect, QUOTE_MINIMAL) writes it, after neutralising."""
    text = neutralise(text)
    if "," in text or '"' in text or "\r" in text or "\n" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def jsonl_line(pk: int, fields: dict[str, Any], prev_hash: str, digest: str, seq: int) -> str:
    return _encode({"id": pk, "seq": seq, **fields, "prev_hash": prev_hash, "hash": digest}) + "\n"


@dataclass
class Export:
    """One export: the filtered linked events with seq <= upto, in chain (seq) order, as CSV or
    JSON Lines. Events not linked yet are not in it (the manifest counts them).

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
    first_seq: int | None = None
    last_seq: int | None = None
    complete: bool = False
    # False: the reference encoder row by row (tests compare the two byte for byte).
    fast: bool = field(default=True, repr=False)
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
        return apply_filters(AuditEvent.objects.filter(seq__isnull=False, seq__lte=self.upto),
                             self.filters).order_by("seq")

    def count(self) -> int:
        return self.queryset().count()

    def _where(self) -> tuple[str, tuple] | None:
        """This export's rows as a WHERE clause on workflows_auditevent (None: none can match)."""
        if self.filters.unfiltered:
            return "seq <= %s", (self.upto,)
        try:
            sql, params = self.queryset().values("id").query.sql_with_params()
        except EmptyResultSet:  # a filter that can match nothing (e.g. .none())
            return None
        return f"id IN ({sql})", tuple(params)

    def _reference_rows(self, cursor=None, ids: list[int] | None = None) -> Iterator[tuple]:
        """(id, _hashed_fields, prev_hash, hash, seq) in seq order, one batch in memory at a time: the
        reference encoding's input. All of this export's rows (SQLite, or ``fast=False``), or the
        rows ``ids`` names, read on ``cursor`` inside the fast path's transaction."""
        if connection.vendor != "postgresql":
            # The embedded SQLite default (make run): the ORM's own chunked iterator and the
            # very function the chain hashes with; the SQL below is PostgreSQL's.
            for event in self.queryset().iterator(chunk_size=BATCH):
                yield event.pk, audit._hashed_fields(event), event.prev_hash, event.hash, event.seq
            return
        if ids is not None:
            where = ("id = ANY(%s)", (ids,))
        elif (where := self._where()) is None:
            return
        query = f"SELECT {_SQL_COLUMNS} FROM workflows_auditevent WHERE {where[0]} ORDER BY seq"
        loads = json.loads
        with self._cursor(cursor) as cursor:
            cursor.execute(query, where[1])
            while batch := cursor.fetchmany(BATCH):
                for (pk, seq, created_at, actor_label, actor_id, action, object_type, object_id,
                     workflow_version_id, payload, request_id, ip, prev_hash, digest) in batch:
                    # Exactly audit._hashed_fields (tests/unit/test_verify_export.py and the
                    # integration tests check the file against audit.compute_hash).
                    fields = {
                        "created_at": created_at, "actor": actor_label, "actor_id": actor_id,
                        "action": action, "object_type": object_type, "object_id": object_id,
                        "workflow_version": workflow_version_id, "payload": loads(payload),
                        "request_id": request_id, "ip": ip,
                    }
                    yield pk, fields, prev_hash, digest, seq

    @contextmanager
    def _cursor(self, given=None):
        """A cursor on the driver's connection: ``given`` as it is, or a named (server-side) one,
        which streams in batches and needs a transaction; the transaction also gives the whole
        export one snapshot."""
        if given is not None:
            yield given
            return
        with transaction.atomic():
            connection.ensure_connection()
            with connection.connection.cursor(name=f"audit_export_{id(self)}") as cursor:
                cursor.itersize = BATCH
                yield cursor

    def _reference_line(self, pk: int, fields: dict[str, Any], prev_hash: str, digest: str, seq: int) -> str:
        if self.format == "jsonl":
            return jsonl_line(pk, fields, prev_hash, digest, seq)
        buffer = io.StringIO()
        # CRLF as RFC 4180 has it; it also makes the csv module quote a lone CR or LF in a cell.
        csv.writer(buffer, lineterminator="\r\n").writerow(csv_cells(pk, fields, prev_hash, digest, seq))
        return buffer.getvalue()

    def _reference_batches(self) -> Iterator[list[str]]:
        """The reference encoder, row by row (SQLite; and what the fast path is tested against)."""
        lines: list[str] = []
        with closing(self._reference_rows()) as rows:
            for pk, fields, prev_hash, digest, seq in rows:
                if self.first_id is None:
                    self.first_id, self.first_hash, self.first_prev_hash, self.first_seq = pk, digest, prev_hash, seq
                self.last_id, self.last_hash, self.last_seq = pk, digest, seq
                lines.append(self._reference_line(pk, fields, prev_hash, digest, seq))
                if len(lines) == BATCH:
                    yield lines
                    lines = []
        if lines:
            yield lines

    def _fast_batches(self) -> Iterator[list[str]]:
        """PostgreSQL writes each line around its payload; Python canonicalises the payloads of
        a whole batch at once (one json.loads for the batch, the C encoder built once). Rows
        whose text would need escaping go through the reference encoder (see _FAST_SQL)."""
        if (where := self._where()) is None:
            return
        prefix_sql, suffix_sql = _FAST_SQL[self.format]
        query = (f"SELECT id, {prefix_sql}, payload::text, {suffix_sql}, {_CHECK} FROM workflows_auditevent "
                 f"WHERE {where[0]} ORDER BY seq")
        csv_format = self.format == "csv"
        special = _CSV_SPECIAL if csv_format else _JSON_SPECIAL
        loads = json.loads
        with self._cursor() as cursor:
            cursor.execute(query, where[1])
            for batch in _prefetched(cursor, BATCH):
                payloads = _canonical_batch(loads("[" + ",".join([row[2] for row in batch]) + "]"))
                if csv_format:
                    lines = [row[1] + cell + row[3] for row, cell in zip(batch, _json_cells(payloads))]
                else:
                    lines = [row[1] + payload + row[3] for row, payload in zip(batch, payloads)]
                if not _plain("".join([row[4] for row in batch]), special):
                    self._reencode_odd_rows(batch, lines, special, cursor.connection)
                if self.first_id is None:
                    self.first_id = batch[0][0]
                self.last_id = batch[-1][0]
                yield lines
            if self.first_id is not None:
                with cursor.connection.cursor() as ends:
                    ends.execute("SELECT id, prev_hash, hash, seq FROM workflows_auditevent WHERE id IN (%s, %s)",
                                 (self.first_id, self.last_id))
                    found = {pk: (prev_hash, digest, seq) for pk, prev_hash, digest, seq in ends.fetchall()}
                self.first_prev_hash, self.first_hash, self.first_seq = found[self.first_id]
                self.last_hash, self.last_seq = found[self.last_id][1:]

    def _reencode_odd_rows(self, batch: list[tuple], lines: list[str], special: tuple[str, ...], conn) -> None:
        """Replace the lines of the rows whose text needs escaping with the reference encoding."""
        odd = {index: row[0] for index, row in enumerate(batch) if not _plain(row[4], special)}
        with conn.cursor() as cursor:
            reference = {pk: self._reference_line(pk, fields, prev_hash, digest, seq)
                         for pk, fields, prev_hash, digest, seq in self._reference_rows(cursor, ids=list(odd.values()))}
        for index, pk in odd.items():
            if pk not in reference:
                raise RuntimeError(f"audit event {pk} disappeared during the export")
            lines[index] = reference[pk]

    def chunks(self) -> Iterator[bytes]:
        if self.format == "csv":
            yield self._take(_CSV_HEADER)
        fast = self.fast and connection.vendor == "postgresql"
        # closing(): an abandoned stream ends its cursor and transaction at once.
        with closing(self._fast_batches() if fast else self._reference_batches()) as batches:
            for lines in batches:
                self.row_count += len(lines)
                yield self._take("".join(lines))
        self.complete = True

    def _take(self, text: str) -> bytes:
        data = text.encode()
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
        head = (AuditEvent.objects.filter(seq__isnull=False, seq__lte=self.upto).order_by("-seq")
                .values_list("id", "hash", "seq").first())
        waiting = audit.unchained()
        return {
            "manifest_version": MANIFEST_VERSION,
            "order": "seq",
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
            "upto_seq": self.upto,
            "first_id": self.first_id,
            "last_id": self.last_id,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "first_prev_hash": self.first_prev_hash,
            "first_hash": self.first_hash,
            "last_hash": self.last_hash,
            "chain_head": ({"id": head[0], "seq": head[2], "hash": head[1]} if head
                           else {"id": 0, "seq": 0, "hash": audit.GENESIS_HASH}),
            # Events are linked into the chain a moment after their commit: the ones not linked
            # yet when the export ran are not in it (a later export has them).
            "only_chained_events": True,
            "unchained_waiting": {"count": waiting.count,
                                  "oldest_at": waiting.oldest_at.isoformat() if waiting.oldest_at else None},
        }


def record_export(export: Export, *, actor=None, channel: str, extra: dict[str, Any] | None = None) -> AuditEvent:
    """The export as an audit event (no personal data: the actor filter becomes a user id)."""
    return audit.record_standalone(
        action=AuditAction.AUDIT_EXPORTED,
        object_type="audit_export",
        object_id=f"{export.format}:{export.upto}",
        actor=actor,
        payload={
            "format": export.format,
            "filters": export.filters.as_event_payload(),
            "upto_seq": export.upto,
            "row_count": export.row_count,
            "file_sha256": export.sha256 if export.complete else None,
            "complete": export.complete,
            "channel": channel,
            **(extra or {}),
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
