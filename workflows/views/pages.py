"""Home and the submitter's pages: workflow list, guided form, submission status."""
import uuid

from django.contrib import messages
from django.forms import MultipleChoiceField
from django.http import Http404
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from django_htmx.http import HttpResponseClientRedirect

from .. import audit, selectors, services
from ..forms import cleaned_to_json, step_form_class
from ..gate import generation_hold
from ..roles import COMPLIANCE, REVIEWER, SUBMITTER, has_role
from .common import paginate, render_page, role_required


@require_safe
def home(request):
    user = request.user
    context = {
        "workflows": selectors.workflows_for_submitter(user),
        "recent": selectors.own_submissions(user)[:10],
        "queue_counts": selectors.queue_counts(user) if has_role(user, REVIEWER) else None,
        "is_compliance": has_role(user, COMPLIANCE),
        "admin_workflows": selectors.workflows_for_admin(user),
    }
    return render_page(request, "workflows/home.html", context)


def _session_key(version) -> str:
    return f"wizard:{version.pk}"


def _token_key(version) -> str:
    return f"wizard-token:{version.pk}"


def _raw_values(request, version) -> dict:
    return request.session.get(_session_key(version), {})


def _raw_from_post(post, form_class) -> dict:
    raw = {}
    for name, field in form_class.base_fields.items():
        raw[name] = post.getlist(name) if isinstance(field, MultipleChoiceField) else post.get(name, "")
    return raw


@role_required(SUBMITTER)
@require_http_methods(["GET", "POST"])
def submission_new(request, slug: str, step: int = 1):
    workflow = selectors.workflow_for_submitter(request.user, slug)
    version = workflow.current_version
    spec = version.spec
    steps = spec.form.steps
    if not 1 <= step <= len(steps):
        raise Http404("No such step")
    form_class = step_form_class(steps[step - 1])
    raw = _raw_values(request, version)
    status = 200
    if request.method == "POST":
        form = form_class(request.POST)
        # Keep what was typed even when the step fails validation: nothing entered is lost.
        raw.update(_raw_from_post(request.POST, form_class))
        request.session[_session_key(version)] = raw
        request.session.setdefault(_token_key(version), uuid.uuid4().hex)
        going_back = request.POST.get("nav") == "back"
        if going_back and step > 1:
            return _goto(request, reverse("submission_new_step", args=[slug, step - 1]))
        if form.is_valid():
            if step < len(steps):
                return _goto(request, reverse("submission_new_step", args=[slug, step + 1]))
            return _finish(request, version, spec, raw)
        status = 422
    else:
        form = form_class(initial={k: v for k, v in raw.items() if k in form_class.base_fields})
    context = {
        "workflow": workflow,
        "version": version,
        "spec": spec,
        "form": form,
        "step": step,
        "steps": steps,
        "is_last": step == len(steps),
        # Said before the request is sent (a spent budget with a hard stop), in plain words.
        "on_hold": step == 1 and request.method == "GET" and bool(generation_hold(workflow_id=workflow.pk)),
    }
    return render_page(request, "workflows/submission_form.html", context, partial="wizard", status=status)


def _goto(request, url):
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _finish(request, version, spec, raw):
    """Validate every step again (the session is not trusted) and create the submission."""
    data = {}
    for number, step_def in enumerate(spec.form.steps, start=1):
        form = step_form_class(step_def)(raw)
        if not form.is_valid():
            messages.error(request, f"Step {number} ({step_def.title}) needs attention.")
            return _goto(request, reverse("submission_new_step", args=[version.workflow.slug, number]))
        data.update(cleaned_to_json(form.cleaned_data))
    # A double-clicked final step sends two requests with the same session: the key makes the
    # second one find the first submission instead of creating another. The data hash keeps a
    # token that outlived its wizard from ever matching a different request.
    token = request.session.get(_token_key(version), "")
    key = f"wizard:{token}:{audit.content_hash(audit.canonical_json(data))[:16]}" if token else ""
    submission = services.submission_create(version=version, user=request.user, data=data, idempotency_key=key)
    request.session.pop(_session_key(version), None)
    request.session.pop(_token_key(version), None)
    messages.success(request, "Submitted. A draft is being prepared.")
    return _goto(request, reverse("submission_detail", args=[submission.pk]))


@require_safe
def submission_list(request):
    page = paginate(request, selectors.submissions_for(request.user).order_by("-created_at", "-pk"))
    return render_page(request, "workflows/submission_list.html", {"page": page, "submissions": page})


@require_safe
def submission_detail(request, pk: int):
    return _submission_page(request, selectors.submission_for(request.user, pk))


def _submission_page(request, submission, status: int = 200):
    is_owner = submission.submitted_by_id == request.user.pk
    can_see_drafts = not is_owner or has_role(request.user, COMPLIANCE)
    draft = submission.latest_draft
    context = {
        "submission": submission,
        "spec": submission.workflow_version.spec,
        "draft": draft,
        "calls": selectors.calls_for_draft(draft) if can_see_drafts else [],
        "cost": selectors.submission_cost(submission) if can_see_drafts else None,
        "can_see_drafts": can_see_drafts,
        "events": selectors.audit_events_for_submission(request.user, submission),
        "decisions": selectors.decisions_for_submission(submission),
        "still_open": selectors.submission_still_open(submission),
        "fields": submission.workflow_version.spec.form.all_fields(),
        "can_retry": services.may_retry(submission, request.user),
    }
    return render_page(request, "workflows/submission_detail.html", context, partial="status", status=status)


@require_POST
def submission_retry(request, pk: int):
    """Send a failed submission to the drafting service again (nothing is retyped)."""
    submission = selectors.submission_for(request.user, pk)
    if not services.may_retry(submission, request.user):
        messages.error(request, "Only a failed submission can be tried again, by its submitter or a reviewer.")
        return _submission_page(request, submission, status=409)
    if services.submission_retry(submission_id=submission.pk, actor=request.user, reason="retried by hand") is None:
        # Someone else (a second tab, a reviewer, the automatic retry) got there first.
        messages.info(request, "This submission was already sent again: a new draft is being prepared.")
    else:
        messages.success(request, "Sent again: a new draft is being prepared.")
    return redirect("submission_detail", pk=submission.pk)
