from django.urls import path

from .views import audit, evidence, health, pages, review, stream
from .views import notifications as notification_views

urlpatterns = [
    path("", pages.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("workflows/<slug:slug>/new/", pages.submission_new, name="submission_new"),
    path("workflows/<slug:slug>/new/<int:step>/", pages.submission_new, name="submission_new_step"),
    path("submissions/", pages.submission_list, name="submission_list"),
    path("submissions/<int:pk>/", pages.submission_detail, name="submission_detail"),
    path("submissions/<int:pk>/retry/", pages.submission_retry, name="submission_retry"),
    path("submissions/<int:pk>/stream/", stream.submission_stream, name="submission_stream"),
    path("submissions/<int:pk>/evidence/", evidence.evidence_page, name="submission_evidence"),
    path("submissions/<int:pk>/evidence.json", evidence.evidence_json, name="submission_evidence_json"),
    path("review/", review.review_queue, name="review_queue"),
    path("review/next/", review.review_next, name="review_next"),
    path("review/counts/", review.review_queue_counts, name="review_queue_counts"),
    path("review/bulk-confirm/", review.review_bulk_confirm, name="review_bulk_confirm"),
    path("review/<int:pk>/lease/", review.review_lease, name="review_lease"),
    path("review/<int:pk>/", review.review_detail, name="review_detail"),
    path("review/<int:pk>/claim/", review.review_claim, name="review_claim"),
    path("review/<int:pk>/release/", review.review_release, name="review_release"),
    path("review/<int:pk>/approve/", review.review_approve, name="review_approve"),
    path("review/<int:pk>/reject/", review.review_reject, name="review_reject"),
    path("review/<int:pk>/regenerate/", review.review_regenerate, name="review_regenerate"),
    path("audit/", audit.audit_log, name="audit_log"),
    path("audit/export/", audit.audit_export, name="audit_export"),
    path("audit/export/manifest/", audit.audit_export_manifest, name="audit_export_manifest"),
    path("audit/export/jobs/", audit.audit_export_jobs, name="audit_export_jobs"),
    path("audit/export/jobs/<int:pk>/file/", audit.audit_export_job_file, name="audit_export_job_file"),
    path("audit/export/jobs/<int:pk>/manifest/", audit.audit_export_job_manifest, name="audit_export_job_manifest"),
    path("account/notifications/", notification_views.notification_preferences, name="notification_preferences"),
]
