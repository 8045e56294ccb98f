"""Audit export jobs: asked for on the compliance page, written by the real Celery worker with
progress, downloaded with their manifest, checked by tools/verify_export.py; real PostgreSQL."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import caches
from django.db import connection, transaction
from django.test import Client

from tests.bench.bench_export import insert_chain
from tests.conftest import wait_for
from workflows import audit, services
from workflows.audit_export import Export, ExportFilters
from workflows.models import AuditEvent, AuditExportJob
from workflows.services.audit_exports import job_paths
from workflows.tasks import run_audit_export

VERIFY = Path(__file__).resolve().parents[2] / "tools" / "verify_export.py"


@pytest.fixture
def export_worker(worker, demo, settings):
    """The real worker, and this process reading the files from the directory it writes to."""
    settings.REVIEWDESK_EXPORT_DIR = worker.export_dir
    return worker


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _finished(job_id: int):
    job = AuditExportJob.objects.get(pk=job_id)
    return job if not job.active else None


def test_a_job_runs_in_the_worker_and_its_download_verifies(export_worker, demo, tmp_path):
    with connection.cursor() as cursor, transaction.atomic():
        insert_chain(cursor.cursor, 12_000)
    compliance = demo.users["compliance"]
    client = _client(compliance)
    # Exports hold the linked events up to a chain position (seq): link everything first.
    audit.chain_now()
    upto = audit.chain_head()[0]
    count = AuditEvent.objects.filter(seq__lte=upto).count()
    response = client.post("/audit/export/jobs/", {"format": "jsonl", "upto": upto})
    assert response.status_code == 302 and response["Location"].endswith("#export-jobs")
    job = AuditExportJob.objects.get()
    assert job.requested_by == compliance and job.total == count and job.file_name.endswith(".jsonl")

    # The page polls the job list while the job is not finished; once finished it stops.
    job = wait_for(lambda: _finished(job.pk), timeout=120, message="the export job to finish")
    assert job.state == "done", job.error
    assert job.rows_written == job.total == count and len(job.file_sha256) == 64
    partial = client.get("/audit/export/jobs/", HTTP_HX_REQUEST="true").content.decode()
    assert f'id="job-{job.pk}-file"' in partial and "hx-trigger" not in partial
    assert f'value="{job.total}"' in partial  # the progress bar is full

    data = client.get(f"/audit/export/jobs/{job.pk}/file/")
    assert data.status_code == 200 and data["Content-Disposition"].startswith("attachment")
    path = tmp_path / job.file_name
    path.write_bytes(b"".join(data.streaming_content))
    manifest = client.get(f"/audit/export/jobs/{job.pk}/manifest/")
    assert manifest.status_code == 200
    manifest_path = tmp_path / f"{job.file_name}.manifest.json"
    manifest_path.write_bytes(b"".join(manifest.streaming_content))
    result = subprocess.run([sys.executable, str(VERIFY), str(path), str(manifest_path)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{count} rows" in result.stdout and "unfiltered" in result.stdout
    # The worker wrote what the exporter writes in-process for the same bound.
    assert json.loads(manifest_path.read_text())["file_sha256"] == Export("jsonl", upto=upto).run().sha256

    # Asked, written, and each download: all in the chain, from the officer who asked.
    requested = AuditEvent.objects.get(action="audit.export_requested")
    exported = AuditEvent.objects.get(action="audit.exported")
    downloads = AuditEvent.objects.filter(action="audit.export_downloaded").order_by("id")
    assert requested.actor == exported.actor == compliance
    assert exported.payload["channel"] == "job" and exported.payload["job_id"] == job.pk
    assert exported.payload["complete"] is True and exported.payload["file_sha256"] == job.file_sha256
    assert [d.payload["part"] for d in downloads] == ["file", "manifest"]
    assert all(d.actor == compliance for d in downloads)
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok

    # The task is safe to run twice: a finished job is left alone.
    assert run_audit_export.apply(args=[job.pk]).get() == "skipped"
    assert AuditEvent.objects.filter(action="audit.exported").count() == 1


def test_a_job_that_cannot_write_its_file_fails_and_says_why(export_worker, demo):
    compliance = demo.users["compliance"]
    audit.record_standalone(action="review.approved", object_type="test", object_id="1", payload={})
    with transaction.atomic():  # the task is sent when this commits
        job = services.audit_export_job_create(user=compliance, export=Export("csv", ExportFilters(
            action="review.approved")))
        # Something else sits where the worker must write: the job cannot be written.
        partial = job_paths(job)[0].with_name(job_paths(job)[0].name + ".partial")
        os.makedirs(partial)
    job = wait_for(lambda: _finished(job.pk), timeout=60, message="the export job to end")
    assert job.state == "failed" and "Is a directory" in job.error
    assert not job_paths(job)[0].exists() and not job_paths(job)[1].exists()
    event = AuditEvent.objects.get(action="audit.exported")
    assert event.payload["complete"] is False and event.payload["job_id"] == job.pk
    assert event.payload["error_hash"] == audit.content_hash(job.error)

    client = _client(compliance)
    page = client.get("/audit/").content.decode()
    assert f'id="job-{job.pk}-error"' in page and "Is a directory" in page
    assert f'id="job-{job.pk}-file"' not in page  # nothing to download is offered
    assert client.get(f"/audit/export/jobs/{job.pk}/file/").status_code == 409
    assert not AuditEvent.objects.filter(action="audit.export_downloaded").exists()


@pytest.mark.parametrize("who", ["submitter", "reviewer", "wfadmin"])
def test_other_roles_cannot_ask_list_or_download(demo, who):
    officer = demo.users["compliance"]
    job = AuditExportJob.objects.create(requested_by=officer, format="csv", upto=0, state="done",
                                        file_name="audit-0-all.csv")
    user = demo.users[who]
    caches[settings.REVIEWDESK_DRAFT_CACHE].delete(f"denied:user:{user.pk}")
    client = _client(user)
    before = AuditEvent.objects.filter(action="auth.denied").count()
    assert client.post("/audit/export/jobs/", {"format": "csv"}).status_code == 404
    assert client.get("/audit/export/jobs/", HTTP_HX_REQUEST="true").status_code == 404
    assert client.get(f"/audit/export/jobs/{job.pk}/file/").status_code == 404
    assert client.get(f"/audit/export/jobs/{job.pk}/manifest/").status_code == 404
    assert AuditEvent.objects.filter(action="auth.denied").count() == before + 4
    assert AuditExportJob.objects.count() == 1
    assert not AuditEvent.objects.filter(action__in=["audit.export_requested", "audit.export_downloaded"]).exists()


def test_an_officer_sees_and_downloads_only_their_own_jobs(demo, make_user, settings, tmp_path):
    settings.REVIEWDESK_EXPORT_DIR = tmp_path
    officer, colleague = demo.users["compliance"], make_user("compliance2", "compliance")
    theirs = AuditExportJob.objects.create(requested_by=officer, format="csv", upto=0, state="done",
                                           file_name="audit-0-all.csv")
    for path in job_paths(theirs):
        path.write_text("x")
    client = _client(colleague)
    for part in ("file", "manifest"):
        assert client.get(f"/audit/export/jobs/{theirs.pk}/{part}/").status_code == 404
    denied = AuditEvent.objects.filter(action="auth.denied").order_by("-id").first()
    assert denied.actor == colleague and denied.object_type == "auditexportjob"
    assert f"export-job-{theirs.pk}" not in client.get("/audit/").content.decode()
    # The owner gets it.
    assert _client(officer).get(f"/audit/export/jobs/{theirs.pk}/file/").status_code == 200


def test_the_job_list_paginates(demo):
    officer = demo.users["compliance"]
    AuditExportJob.objects.bulk_create([AuditExportJob(requested_by=officer, format="csv", upto=0, state="done",
                                                       file_name="audit-0-all.csv") for _ in range(13)])
    client = _client(officer)
    first = client.get("/audit/").content.decode()
    assert first.count('id="export-job-') == 10 and "Jobs page 1 of 2" in first
    second = client.get("/audit/", {"jobs_page": 2}).content.decode()
    assert second.count('id="export-job-') == 3
    assert "hx-trigger" not in first.split('id="export-jobs"')[1].split(">")[0]  # nothing running: no polling


def test_big_exports_are_offered_as_jobs_only(demo, settings):
    settings.REVIEWDESK_EXPORT_STREAM_MAX_ROWS = 2
    for n in range(3):
        audit.record_standalone(action="review.approved", object_type="test", object_id=str(n), payload={})
    audit.chain_now()  # exports hold linked events; events are linked after their commit (migration 0012)
    client = _client(demo.users["compliance"])
    page = client.get("/audit/", {"action": "review.approved"}).content.decode()
    assert 'id="export-too-big"' in page and 'id="export-csv"' not in page and 'id="job-csv"' in page
    assert client.get("/audit/export/", {"format": "csv", "action": "review.approved"}).status_code == 400
    assert client.get("/audit/export/manifest/", {"format": "csv", "action": "review.approved"}).status_code == 400
    small = client.get("/audit/", {"action": "review.approved", "actor": "system",
                                   "until": "2000-01-01T00:00:00"}).content.decode()
    assert 'id="export-csv"' in small


def test_a_bad_job_request_is_a_400(demo):
    client = _client(demo.users["compliance"])
    assert client.post("/audit/export/jobs/", {"format": "pdf"}).status_code == 400
    assert client.post("/audit/export/jobs/", {"format": "csv", "upto": 10**9}).status_code == 400
    assert not AuditExportJob.objects.exists()


# --- old files are purged; a job whose message was lost is sent again ------------------------


def test_finished_jobs_past_retention_are_purged_with_their_files(demo, settings, tmp_path):
    from datetime import timedelta

    from django.utils import timezone

    from workflows import tasks

    settings.REVIEWDESK_EXPORT_DIR = tmp_path
    settings.REVIEWDESK_EXPORT_RETENTION_DAYS = 30
    officer, now = demo.users["compliance"], timezone.now()

    def job(state, finished_days_ago):
        made = AuditExportJob.objects.create(
            requested_by=officer, format="csv", upto=0, state=state, file_name="audit-0-all.csv",
            finished_at=None if finished_days_ago is None else now - timedelta(days=finished_days_ago))
        for path in job_paths(made):
            path.write_text("x")
        return made

    old_done, old_failed, recent = job("done", 31), job("failed", 45), job("done", 29)
    running, queued = job("running", None), job("queued", None)
    AuditExportJob.objects.filter(pk__in=[running.pk, queued.pk]).update(created_at=now - timedelta(days=90))
    assert tasks.purge_audit_export_jobs() == 2
    assert set(AuditExportJob.objects.values_list("pk", flat=True)) == {recent.pk, running.pk, queued.pk}
    for gone in (old_done, old_failed):
        assert not any(path.exists() for path in job_paths(gone))
    for kept in (recent, running, queued):
        assert all(path.exists() for path in job_paths(kept))
    event = AuditEvent.objects.get(action="audit.export_purged")
    assert event.payload["job_ids"] == [old_done.pk, old_failed.pk] and event.payload["retention_days"] == 30
    assert tasks.purge_audit_export_jobs() == 0  # nothing left to purge, no event
    assert AuditEvent.objects.filter(action="audit.export_purged").count() == 1


def test_a_job_whose_task_message_was_lost_is_sent_again_and_runs(export_worker, demo):
    from datetime import timedelta

    from django.utils import timezone

    from workflows import tasks

    audit.record_standalone(action="review.approved", object_type="test", object_id="1", payload={})
    audit.chain_now()
    upto = audit.chain_head()[0]
    # Queued, its message never sent (the broker was down at commit), for longer than RESEND_AFTER.
    lost = AuditExportJob.objects.create(requested_by=demo.users["compliance"], format="jsonl", upto=upto,
                                         total=upto, file_name=f"audit-{upto}-all.jsonl",
                                         created_at=timezone.now() - timedelta(minutes=10))
    fresh = AuditExportJob.objects.create(requested_by=demo.users["compliance"], format="csv", upto=upto,
                                          total=upto, file_name=f"audit-{upto}-all.csv")
    assert tasks.resend_queued_audit_exports() == 1  # the fresh one may still have its message coming
    assert tasks.resend_queued_audit_exports() == 0  # sent once per interval, not on every sweep
    job = wait_for(lambda: _finished(lost.pk), timeout=120, message="the re-sent export job to finish")
    assert job.state == "done" and job.rows_written == upto
    assert AuditExportJob.objects.get(pk=fresh.pk).state == "queued"
