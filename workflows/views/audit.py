"""The compliance officer's view of the audit trail."""
import json
from urllib.parse import urlencode

from django.conf import settings
from django.core.paginator import Paginator
from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_safe

from .. import audit, selectors, services
from ..audit_chain import last_anchored_event, last_checkpoint
from ..audit_export import (
    CONTENT_TYPES,
    Export,
    ExportFilterForm,
    ExportFilters,
    ExportRequestForm,
    apply_filters,
    chain_head_id,
    file_name,
    record_export,
)
from ..roles import COMPLIANCE
from .common import paginate, render_page, role_required


@role_required(COMPLIANCE)
@require_safe
def audit_log(request):
    events = selectors.audit_events_for(request.user)
    filters = ExportFilterForm(request.GET)
    export = None
    if filters.is_valid():
        action = filters.cleaned_data["action"]
        chosen = ExportFilters.from_cleaned(filters.cleaned_data)
        # The export offered is bounded by the head now, so its file and its manifest (a
        # second pass, see workflows.audit_export) cover the same rows.
        export = Export("csv", chosen, upto=chain_head_id())
        events = apply_filters(events, chosen)
        status = 200
    else:
        # A filter that cannot match anything is a mistake to point out, not a reason to
        # show the whole trail as if it had been applied.
        action, events, status = request.GET.get("action", ""), events.none(), 400
    page = paginate(request, events)
    context = {
        "page": page,
        "action": action,
        "filters": filters,
        # Verification never runs in a request: a periodic task verifies from the last checkpoint
        # and records the verified head (workflows/audit_chain.py); this shows what it found.
        "checkpoint": last_checkpoint(),
        # Events are linked into the chain a moment after their commit (workflows/audit.py).
        "unchained": audit.unchained(),
        "stale_unchained": audit.unchained(older_than_seconds=audit.CHAIN_LAG_WARNING_SECONDS),
        "anchor": last_anchored_event(),
        "export": _export_offer(export),
        **_jobs_context(request),
    }
    return render_page(request, "workflows/audit_log.html", context, status=status)


def _jobs_context(request) -> dict:
    jobs = Paginator(selectors.audit_export_jobs_for(request.user), 10).get_page(request.GET.get("jobs_page"))
    return {"jobs": jobs, "jobs_active": any(job.active for job in jobs)}


def _export_offer(export: Export | None) -> dict | None:
    if export is None:
        return None
    filter_query = export.filters.as_query()
    count = export.count()
    return {"count": count, "upto": export.upto, "filtered": not export.filters.unfiltered,
            "query": urlencode({**filter_query, "upto": export.upto}), "filter_query": urlencode(filter_query),
            "fields": {**filter_query, "upto": export.upto},
            # Above the line, streaming inside the request would hold a web worker for too long:
            # the page offers the export job only (docs/ARCHITECTURE.md "Export jobs").
            "streamable": count <= settings.REVIEWDESK_EXPORT_STREAM_MAX_ROWS,
            "stream_max_rows": settings.REVIEWDESK_EXPORT_STREAM_MAX_ROWS}


def _export_request(request, data=None) -> Export | None:
    form = ExportRequestForm(request.GET if data is None else data)
    if not form.is_valid():
        return None
    upto, head = form.cleaned_data["upto"], chain_head_id()
    if upto is not None and upto > head:
        return None  # a bound beyond the head would not give the same rows twice
    return Export(form.cleaned_data["format"], ExportFilters.from_cleaned(form.cleaned_data),
                  upto=head if upto is None else upto)


@role_required(COMPLIANCE)
@require_GET
def audit_export(request):
    """The filtered events as CSV or JSON Lines, streamed; an `audit.exported` event is
    written when the stream ends (with the file's SHA-256, or complete=false if cut short)."""
    export = _export_request(request)
    if export is None:
        return HttpResponse("Invalid export parameters.", status=400, content_type="text/plain")
    if export.count() > settings.REVIEWDESK_EXPORT_STREAM_MAX_ROWS:
        return _too_big_to_stream()
    user = request.user

    def stream():
        try:
            yield from export.chunks()
        finally:
            record_export(export, actor=user, channel="web")

    response = StreamingHttpResponse(stream(), content_type=CONTENT_TYPES[export.format])
    response["Content-Disposition"] = f'attachment; filename="{file_name(export)}"'
    response["Cache-Control"] = "no-store"
    return response


@role_required(COMPLIANCE)
@require_GET
def audit_export_manifest(request):
    """The manifest of the export with the same parameters: a second pass over the same
    id-bounded rows of an append-only table gives the same bytes, hashed here, not sent."""
    export = _export_request(request)
    if export is None:
        return HttpResponse("Invalid export parameters.", status=400, content_type="text/plain")
    if export.count() > settings.REVIEWDESK_EXPORT_STREAM_MAX_ROWS:
        return _too_big_to_stream()
    manifest = export.run().manifest(exported_by=request.user.get_username(), file_name=file_name(export))
    response = HttpResponse(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                            content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{file_name(export)}.manifest.json"'
    response["Cache-Control"] = "no-store"
    return response


def _too_big_to_stream() -> HttpResponse:
    return HttpResponse(
        f"This export has more than {settings.REVIEWDESK_EXPORT_STREAM_MAX_ROWS} events: ask for it as an export "
        "job on the audit page, which writes the file in the background and shows its progress.",
        status=400, content_type="text/plain")


@role_required(COMPLIANCE)
@require_http_methods(["GET", "POST"])
def audit_export_jobs(request):
    """GET: the officer's export jobs (the polled partial). POST: ask for an export job with
    the page's filters, format and bound."""
    if request.method == "POST":
        export = _export_request(request, request.POST)
        if export is None:
            return HttpResponse("Invalid export parameters.", status=400, content_type="text/plain")
        services.audit_export_job_create(user=request.user, export=export)
        if not request.htmx:
            query = urlencode(export.filters.as_query())
            return redirect(f"{reverse('audit_log')}{'?' + query if query else ''}#export-jobs")
    elif not request.htmx:  # the list lives on the audit page
        return redirect(f"{reverse('audit_log')}?{urlencode({'jobs_page': request.GET.get('jobs_page', 1)})}#export-jobs")
    return render_page(request, "workflows/audit_log.html", _jobs_context(request), partial="export_jobs")


def _job_download(request, pk: int, part: str):
    job = selectors.audit_export_job_for(request.user, pk)
    try:
        path = services.audit_export_job_download(job=job, user=request.user, part=part)
    except FileNotFoundError as exc:
        return HttpResponse(f"Not available: {exc}.", status=409, content_type="text/plain")
    name = job.file_name if part == "file" else f"{job.file_name}.manifest.json"
    response = FileResponse(open(path, "rb"), as_attachment=True, filename=name,
                            content_type=CONTENT_TYPES[job.format] if part == "file" else "application/json")
    response["Cache-Control"] = "no-store"
    return response


@role_required(COMPLIANCE)
@require_GET
def audit_export_job_file(request, pk: int):
    return _job_download(request, pk, "file")


@role_required(COMPLIANCE)
@require_GET
def audit_export_job_manifest(request, pk: int):
    return _job_download(request, pk, "manifest")
