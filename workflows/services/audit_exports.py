"""Audit export jobs: a compliance officer asks for an export, a worker writes the file and its
manifest to REVIEWDESK_EXPORT_DIR with progress, the officer downloads both.

Every step is an audit event: `audit.export_requested` when asked, `audit.exported` when the
worker finishes (with the file's SHA-256) or fails (`complete: false`), and
`audit.export_downloaded` for every download of the file or the manifest.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
from pathlib import Path

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .. import audit
from ..audit_export import Export, ExportFilters, file_name, record_export
from ..dispatch import enqueue_audit_export
from ..models import AuditExportJob
from ..vocab import AuditAction

log = logging.getLogger(__name__)

# A running job whose progress has not moved for this long lost its worker; another run of the
# task takes it over (the export is deterministic for its bound, so it starts again).
STALE_AFTER = datetime.timedelta(minutes=5)
# A job still queued this long after its task was sent lost the message (a broker outage at
# commit, a flushed queue): the sweep sends it again, at most once per this interval. A
# duplicate is harmless: the claim is one conditional UPDATE, the loser retries and then skips.
RESEND_AFTER = datetime.timedelta(minutes=2)
PURGE_BATCH = 500


def job_paths(job: AuditExportJob) -> tuple[Path, Path]:
    """Where the worker writes the job's file and manifest (the job's id keeps names unique)."""
    base = Path(settings.REVIEWDESK_EXPORT_DIR) / f"job-{job.pk}-{job.file_name}"
    return base, base.with_name(base.name + ".manifest.json")


def _filters(job: AuditExportJob) -> ExportFilters:
    stored = job.filters or {}
    return ExportFilters(
        since=parse_datetime(stored["since"]) if stored.get("since") else None,
        until=parse_datetime(stored["until"]) if stored.get("until") else None,
        workflow=stored.get("workflow") or "", actor=stored.get("actor") or "", action=stored.get("action") or "",
        submission=stored.get("submission"),
    )


def job_export(job: AuditExportJob) -> Export:
    return Export(job.format, _filters(job), upto=job.upto)


def audit_export_job_create(*, user, export: Export) -> AuditExportJob:
    """Queue an export job for ``export`` (its format, filters and bound); the worker starts on commit."""
    with transaction.atomic():
        job = AuditExportJob.objects.create(
            requested_by=user, format=export.format, filters=export.filters.as_manifest(), upto=export.upto,
            total=export.count(), file_name=file_name(export),
        )
        audit.record(action=AuditAction.AUDIT_EXPORT_REQUESTED, object_type="audit_export_job", object_id=job.pk,
                     actor=user, payload={"format": job.format, "filters": export.filters.as_event_payload(),
                                          "upto_seq": job.upto, "total": job.total})
        transaction.on_commit(lambda: enqueue_audit_export(job.pk))
    return job


def audit_export_job_claim(*, job_id: int) -> tuple[AuditExportJob | None, bool]:
    """(job, busy). Claims a queued job, or a running one whose worker went silent; ``busy``
    says another worker is on it now (the caller may look again later)."""
    now = timezone.now()
    claimed = AuditExportJob.objects.filter(pk=job_id, state=AuditExportJob.State.QUEUED).update(
        state=AuditExportJob.State.RUNNING, started_at=now, progress_at=now, rows_written=0)
    if not claimed:
        claimed = AuditExportJob.objects.filter(
            pk=job_id, state=AuditExportJob.State.RUNNING, progress_at__lt=now - STALE_AFTER,
        ).update(started_at=now, progress_at=now, rows_written=0)
        if claimed:
            log.warning("export job %s: taking over from a worker that went silent", job_id)
    if claimed:
        return AuditExportJob.objects.get(pk=job_id), False
    busy = AuditExportJob.objects.filter(pk=job_id, state=AuditExportJob.State.RUNNING).exists()
    return None, busy


class _Progress:
    """Writes rows_written on its own database connection: the export reads inside a
    transaction (one snapshot, a server-side cursor), and progress written on that connection
    would stay invisible to the page until the very end."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        own = connection.vendor == "postgresql" or connection.in_atomic_block
        self.connection = connections.create_connection(DEFAULT_DB_ALIAS) if own else connection

    def __call__(self, rows_written: int) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute("UPDATE workflows_auditexportjob SET rows_written = %s, progress_at = %s WHERE id = %s",
                           [rows_written, timezone.now(), self.job_id])

    def close(self) -> None:
        if self.connection is not connection:
            self.connection.close()


def audit_export_job_run(*, job: AuditExportJob) -> AuditExportJob:
    """Write the claimed job's file and manifest; mark it done, or failed with the reason."""
    export = job_export(job)
    path, manifest_path = job_paths(job)
    partial = path.with_name(path.name + ".partial")
    progress = _Progress(job.pk)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as out:
            for chunk in export.chunks():
                out.write(chunk)
                progress(export.row_count)
            out.flush()
            os.fsync(out.fileno())
        manifest = export.manifest(exported_by=job.requested_by.get_username(), file_name=job.file_name)
        manifest["job_id"] = job.pk
        manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(partial, path)
    except Exception as exc:  # any failure ends the job visibly, with its reason
        log.exception("export job %s failed", job.pk)
        for leftover in (partial, path, manifest_path):
            try:
                leftover.unlink(missing_ok=True)
            except OSError:  # not a file we wrote (the reason it failed, perhaps)
                pass
        return audit_export_job_fail(job_id=job.pk, export=export, reason=f"{type(exc).__name__}: {exc}")
    finally:
        progress.close()
    with transaction.atomic():
        job = AuditExportJob.objects.select_for_update().get(pk=job.pk)
        job.state, job.finished_at = AuditExportJob.State.DONE, timezone.now()
        job.rows_written, job.total, job.file_sha256 = export.row_count, export.row_count, export.sha256
        job.save(update_fields=["state", "finished_at", "rows_written", "total", "file_sha256"])
        _record_outcome(job, export)
    return job


def audit_export_job_fail(*, job_id: int, export: Export, reason: str) -> AuditExportJob:
    with transaction.atomic():
        job = AuditExportJob.objects.select_for_update().get(pk=job_id)
        job.state, job.finished_at, job.error = AuditExportJob.State.FAILED, timezone.now(), reason[:2000]
        job.save(update_fields=["state", "finished_at", "error"])
        _record_outcome(job, export)
    return job


def _record_outcome(job: AuditExportJob, export: Export) -> None:
    # The same event as a streamed export (record_export), from the job's requester, marked as
    # a job's; complete=false and the reason's hash when it failed.
    extra = {"job_id": job.pk}
    if job.error:
        extra["error_hash"] = audit.content_hash(job.error)
    record_export(export, actor=job.requested_by, channel="job", extra=extra)


def audit_export_job_download(*, job: AuditExportJob, user, part: str) -> Path:
    """The path of a finished job's file or manifest, recording the download."""
    if job.state != AuditExportJob.State.DONE:
        raise FileNotFoundError(f"export job {job.pk} is {job.state}")
    path, manifest_path = job_paths(job)
    chosen = path if part == "file" else manifest_path
    if not chosen.is_file():
        raise FileNotFoundError(f"export job {job.pk}: {chosen.name} is gone from the export directory")
    with transaction.atomic():
        audit.record(action=AuditAction.AUDIT_EXPORT_DOWNLOADED, object_type="audit_export_job", object_id=job.pk,
                     actor=user, payload={"part": part, "format": job.format, "file_sha256": job.file_sha256,
                                          "upto_seq": job.upto})
    return chosen


def audit_export_jobs_resend(*, now: datetime.datetime | None = None) -> list[int]:
    """Send the task again for every job left queued RESEND_AFTER after it was last sent
    (``progress_at`` holds that time while the job is queued; the claim resets it)."""
    now = now or timezone.now()
    cutoff = now - RESEND_AFTER
    ids = []
    for job in AuditExportJob.objects.filter(state=AuditExportJob.State.QUEUED).order_by("id")[:PURGE_BATCH]:
        if (job.progress_at or job.created_at) >= cutoff:
            continue
        # Marked first, conditionally: two sweeps at once send it once.
        if AuditExportJob.objects.filter(pk=job.pk, state=AuditExportJob.State.QUEUED,
                                         progress_at=job.progress_at).update(progress_at=now):
            log.warning("export job %s still queued since %s: sending its task again", job.pk,
                        (job.progress_at or job.created_at).isoformat())
            enqueue_audit_export(job.pk)
            ids.append(job.pk)
    return ids


def audit_export_jobs_purge(*, now: datetime.datetime | None = None) -> list[int]:
    """Delete the finished jobs (done or failed) older than REVIEWDESK_EXPORT_RETENTION_DAYS:
    their file and manifest, then their row. The record of each job (asked, written, every
    download) stays in the audit chain; one ``audit.export_purged`` event lists the jobs removed.
    A file that cannot be removed keeps its job for the next run."""
    now = now or timezone.now()
    days = settings.REVIEWDESK_EXPORT_RETENTION_DAYS
    cutoff = now - datetime.timedelta(days=days)
    jobs = list(AuditExportJob.objects.filter(
        state__in=[AuditExportJob.State.DONE, AuditExportJob.State.FAILED], finished_at__lt=cutoff,
    ).order_by("id")[:PURGE_BATCH])
    removed = []
    for job in jobs:
        path, manifest_path = job_paths(job)
        try:
            for file in (path, manifest_path, path.with_name(path.name + ".partial")):
                file.unlink(missing_ok=True)
        except OSError:
            log.exception("export job %s: cannot delete its files; kept for the next purge", job.pk)
            continue
        removed.append(job.pk)
    if not removed:
        return []
    with transaction.atomic():
        AuditExportJob.objects.filter(pk__in=removed).delete()
        audit.record(action=AuditAction.AUDIT_EXPORT_PURGED, object_type="audit_export_job", object_id="purge",
                     payload={"job_ids": removed, "retention_days": days, "finished_before": cutoff.isoformat()})
    return removed
