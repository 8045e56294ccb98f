"""Home and the submitter's pages: workflow list, guided form, submission status."""
import re
import time
import uuid

from django.contrib import messages
from django.forms import MultipleChoiceField
from django.http import Http404
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from django_htmx.http import HttpResponseClientRedirect

from .. import audit, draft_stream, selectors, services
from ..denials import get_in_scope
from ..forms import cleaned_to_json, step_form_class
from ..gate import generation_hold
from ..pipeline.engines import engine_name
from ..plain_status import plain_history, plain_status
from ..roles import COMPLIANCE, REVIEWER, SUBMITTER, has_role
from .common import paginate, render_page, role_required


@require_safe
def home(request):
    user = request.user
    context = {
        "workflows": selectors.workflows_for_submitter(user),
        "recent": _with_plain_status(selectors.own_submissions(user)[:10]),
        "queue_counts": selectors.queue_counts(user) if has_role(user, REVIEWER) else None,
        "is_compliance": has_role(user, COMPLIANCE),
        "admin_workflows": selectors.workflows_for_admin(user),
    }
    return render_page(request, "workflows/home.html", context)


# --- the guided form ---------------------------------------------------------------------
#
# Each wizard (one browser tab filling one form) has its own id, carried in the URL (?w=...),
# and its own answers in the session under that id: two tabs on the same workflow never see
# each other's answers. Opening the form without an id starts a new wizard. A client that
# never sends an id (a script posting to the step URLs) keeps the one id-less wizard per
# workflow and session it always had.

WIZARDS = "wizards"
MAX_WIZARDS = 20  # per session; the least recently used are forgotten
_WIZARD_ID = re.compile(r"[0-9a-f]{32}")


def _wizard_id(request, slug: str) -> str:
    """The wizard this request belongs to: its valid ?w=, else the id-less one ("") if that
    holds answers, else (a form opened afresh) a new id."""
    value = request.GET.get("w", "")
    if _WIZARD_ID.fullmatch(value):
        return value
    if request.method == "POST" or _wizard(request, "", slug)["raw"]:
        return ""
    return uuid.uuid4().hex


def _session_key(wizard_id: str, slug: str) -> str:
    return wizard_id or f"{slug}:"


def _wizard(request, wizard_id: str, slug: str) -> dict:
    """This tab's answers so far (empty for a new wizard or one of another workflow)."""
    state = request.session.get(WIZARDS, {}).get(_session_key(wizard_id, slug))
    if not state or state.get("slug") != slug:
        return {"slug": slug, "raw": {}, "token": ""}
    return state


def _save_wizard(request, wizard_id: str, state: dict) -> None:
    key = _session_key(wizard_id, state["slug"])
    wizards = dict(request.session.get(WIZARDS, {}))
    wizards.pop(key, None)
    state = {**state, "touched": time.time()}
    wizards[key] = state
    for stale in sorted(wizards, key=lambda k: wizards[k].get("touched", 0))[:-MAX_WIZARDS]:
        del wizards[stale]
    request.session[WIZARDS] = wizards


def _drop_wizard(request, wizard_id: str, slug: str) -> None:
    wizards = dict(request.session.get(WIZARDS, {}))
    if wizards.pop(_session_key(wizard_id, slug), None) is not None:
        request.session[WIZARDS] = wizards


def _step_url(slug: str, step: int, wizard_id: str) -> str:
    url = reverse("submission_new_step", args=[slug, step])
    return f"{url}?w={wizard_id}" if wizard_id else url


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
    if request.method == "GET" and "from" in request.GET:
        return _start_from(request, workflow, spec)
    wizard_id = _wizard_id(request, slug)
    state = _wizard(request, wizard_id, slug)
    raw = state["raw"]
    form_class = step_form_class(steps[step - 1])
    status = 200
    if request.method == "POST":
        form = form_class(request.POST)
        # Keep what was typed even when the step fails validation: nothing entered is lost.
        raw.update(_raw_from_post(request.POST, form_class))
        state["token"] = state.get("token") or uuid.uuid4().hex
        _save_wizard(request, wizard_id, state)
        going_back = request.POST.get("nav") == "back"
        if going_back and step > 1:
            return _goto(request, _step_url(slug, step - 1, wizard_id))
        if form.is_valid():
            if step < len(steps):
                return _goto(request, _step_url(slug, step + 1, wizard_id))
            return _finish(request, version, spec, wizard_id, state)
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
        "wizard_id": wizard_id,
        "action": _step_url(slug, step, wizard_id),
        "prefilled": bool(state.get("from")) and step == 1,
        # Said before the request is sent (a spent budget with a hard stop), in plain words.
        "on_hold": step == 1 and request.method == "GET" and bool(generation_hold(workflow_id=workflow.pk)),
    }
    return render_page(request, "workflows/submission_form.html", context, partial="wizard", status=status)


def _start_from(request, workflow, spec):
    """A new wizard filled with the answers of one of the reader's own earlier requests (a
    failed, rejected or withdrawn one, typically): their own values, personal ones included.
    Only fields the current form still has are copied; the form validates them again."""
    try:
        pk = int(request.GET["from"])
    except ValueError:
        raise Http404("No such submission") from None
    source = get_in_scope(selectors.own_submissions(request.user).filter(workflow_version__workflow=workflow), pk=pk)
    wizard_id = uuid.uuid4().hex
    raw = {}
    for field in spec.form.all_fields():
        if field.name in source.data:
            raw[field.name] = _as_raw(source.data[field.name])
    _save_wizard(request, wizard_id, {"slug": workflow.slug, "raw": raw, "token": "", "from": source.pk})
    return redirect(_step_url(workflow.slug, 1, wizard_id))


def _as_raw(value):
    """A stored (JSON) value as the form posts it back: a ticked box is "on"."""
    if value is True:
        return "on"
    if value is False or value is None:
        return ""
    if isinstance(value, list):
        return [str(v) for v in value]
    return str(value)


def _goto(request, url):
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _finish(request, version, spec, wizard_id: str, state: dict):
    """Validate every step again (the session is not trusted) and create the submission."""
    raw = state["raw"]
    data = {}
    for number, step_def in enumerate(spec.form.steps, start=1):
        form = step_form_class(step_def)(raw)
        if not form.is_valid():
            messages.error(request, f"Step {number} ({step_def.title}) needs attention.")
            return _goto(request, _step_url(version.workflow.slug, number, wizard_id))
        data.update(cleaned_to_json(form.cleaned_data))
    # A double-clicked final step sends two requests with the same wizard: the key makes the
    # second one find the first submission instead of creating another. The data hash keeps a
    # token that outlived its wizard from ever matching a different request.
    token = state.get("token", "")
    key = f"wizard:{token}:{audit.content_hash(audit.canonical_json(data))[:16]}" if token else ""
    submission = services.submission_create(version=version, user=request.user, data=data, idempotency_key=key)
    _drop_wizard(request, wizard_id, version.workflow.slug)
    messages.success(request, "Submitted. A draft is being prepared.")
    return _goto(request, reverse("submission_detail", args=[submission.pk]))


def _with_plain_status(submissions):
    """The rows of a list, each with its plain-words status (``row.plain``)."""
    rows = list(submissions)
    for row in rows:
        row.plain = plain_status(row)
    return rows


@require_safe
def submission_list(request):
    page = paginate(request, selectors.submissions_for(request.user).order_by("-created_at", "-pk"))
    page.object_list = _with_plain_status(page.object_list)
    # Reviewers and compliance get the facts (who, state, lane); a submitter the plain words.
    technical = has_role(request.user, REVIEWER) or has_role(request.user, COMPLIANCE)
    return render_page(request, "workflows/submission_list.html",
                       {"page": page, "submissions": page, "technical": technical})


@require_safe
def submission_detail(request, pk: int):
    return _submission_page(request, selectors.submission_for(request.user, pk))


def _submission_page(request, submission, status: int = 200):
    user = request.user
    is_owner = submission.submitted_by_id == user.pk
    can_see_drafts = selectors.may_see_drafts(user, submission)
    draft = submission.latest_draft if can_see_drafts else None
    spec = submission.workflow_version.spec
    still_open = selectors.submission_still_open(submission)
    events = selectors.audit_events_for_submission(user, submission)
    streaming = (draft_stream.available() and submission.is_drafting
                 and draft_stream.streams_to_submitter(spec))
    context = {
        "submission": submission,
        "spec": spec,
        "draft": draft,
        "calls": selectors.calls_for_draft(draft) if can_see_drafts else [],
        "cost": selectors.submission_cost(submission) if can_see_drafts else None,
        "can_see_drafts": can_see_drafts,
        "plain": plain_status(
            submission, review_due=selectors.blocking_review_due(submission), offline=engine_name() == "offline",
            still_checked=still_open and submission.is_terminal,
        ),
        # The audit codes and hashes are for reviewers and compliance; the submitter reads
        # what happened in sentences.
        "events": events if can_see_drafts else [],
        "history": [] if can_see_drafts else plain_history(events),
        "decisions": selectors.decisions_for_submission(submission),
        "still_open": still_open,
        "fields": spec.form.all_fields(),
        "can_retry": services.may_retry(submission, user),
        "can_start_again": is_owner and has_role(user, SUBMITTER) and not submission.is_erased and (
            submission.is_failed or submission.is_rejected or submission.retracted_at is not None),
        "stream_url": reverse("submission_stream", args=[submission.pk]) if streaming else "",
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
