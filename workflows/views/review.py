"""The reviewer's queue and decisions. Each POST is one service call."""
from django.contrib import messages
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from .. import selectors, services
from ..explain import lane_sentence
from ..forms import ApproveForm, RegenerateForm, RejectForm
from ..models import DomainError, Lane
from ..review_editor import (
    MARKER,
    assemble,
    build_editor,
    dump,
    field_label,
    finding_paths,
    original_value,
    output_problems,
)
from ..roles import REVIEWER
from ..services.reviews import _diff as output_diff
from ..templatetags.reviewdesk import pretty_json
from .common import paginate, render_page, role_required

QUEUE_LANES = [Lane.BLOCKING_REVIEW, Lane.ASYNC_REVIEW]
EARLIER_DRAFTS = 3  # the latest ones before this draft, side by side
TIMELINE_EVENTS = 100  # the review page's trail; the submission page has the whole of it


@role_required(REVIEWER)
@require_safe
def review_queue(request):
    lane = request.GET.get("lane") or Lane.BLOCKING_REVIEW
    if lane not in QUEUE_LANES:
        lane = Lane.BLOCKING_REVIEW
    page = paginate(request, selectors.open_review_tasks_for(request.user, lane))
    context = {
        "lane": lane,
        "lanes": [(value, Lane(value).label) for value in QUEUE_LANES],
        "counts": selectors.queue_counts(request.user),
        "page": page,
        "tasks": page,
        "now": timezone.now(),
    }
    return render_page(request, "workflows/review_queue.html", context, partial="queue")


def _detail_context(request, task, **forms):
    draft = task.draft
    submission = task.submission
    spec = submission.workflow_version.spec
    is_json = spec.output.format == "json"
    components = draft.score_components if isinstance(draft.score_components, dict) else {}
    # The sentence says "the refund amount": a schema title when the workflow gives one, else the
    # key in lower-case words (explain.label_of).
    properties = (spec.output.json_schema or {}).get("properties") or {}
    labels = {key: prop["title"] for key, prop in properties.items() if isinstance(prop, dict) and prop.get("title")}
    context = {
        "task": task,
        "submission": submission,
        "draft": draft,
        "calls": selectors.calls_for_draft(draft),
        "spec": spec,
        "fields": spec.form.all_fields(),
        "holds_lease": task.lease_held_by(request.user),
        "may_decide": services.review_refusal(task, request.user) is None,
        # JSON drafts are offered indented for editing; re-indenting alone is not an edit.
        "approve_form": forms.get("approve_form")
        or ApproveForm(initial={"edited_output": pretty_json(draft.content) if is_json else draft.content}),
        "reject_form": forms.get("reject_form") or RejectForm(),
        "regenerate_form": forms.get("regenerate_form") or RegenerateForm(),
        "error": forms.get("error"),
        "why_lane": lane_sentence(lane=draft.lane, findings=draft.findings,
                                  components=components, sampled=task.sampled, labels=labels, score=draft.score),
        "editor": None,
        "preview_diff": forms.get("preview_diff"),
        "editor_marker": MARKER,
        # Earlier attempts of this draft (an unrepaired answer, a cascade's first try), and the
        # drafts the submission had before a reviewer sent it back.
        "earlier_attempts": [a for a in (draft.earlier_attempts or []) if isinstance(a, dict)],
        "earlier_drafts": list(submission.drafts.exclude(pk=draft.pk).order_by("-attempt")[:EARLIER_DRAFTS]),
        "events": list(selectors.audit_events_for_submission(request.user, submission)[:TIMELINE_EVENTS]),
        "timeline_limit": TIMELINE_EVENTS,
    }
    if is_json and not submission.is_erased:
        try:
            original = original_value(draft.content)
        except (ValueError, RecursionError):
            original = None  # not JSON at all: only the text box can fix it
        if original is not None:
            findings = finding_paths(spec, original, components.get("validator_details"))
            context["editor"] = build_editor(
                spec, original, components=components, findings=findings, data=forms.get("editor_data"),
                problems=forms.get("problems") or (), errors=forms.get("editor_errors"),
            )
            placed = {f for node in context["editor"].walk() for f in node.findings}
            context["unplaced_findings"] = [
                f"{code}: {detail}" for code, detail in (components.get("validator_details") or {}).items()
                if code != "schema_invalid" or not placed
            ] if draft.findings else []
    return context


@role_required(REVIEWER)
@require_safe
def review_detail(request, pk: int):
    return _detail_page(request, selectors.review_task_for(request.user, pk))


def _detail_page(request, task):
    return render_page(request, "workflows/review_detail.html", _detail_context(request, task), partial="decision")


def _after_decision(request, task, message):
    messages.success(request, message)
    return redirect(reverse("review_queue") + f"?lane={task.lane}")


def _refuse(request, task, status=409, **forms):
    context = _detail_context(request, task, **forms)
    return render_page(request, "workflows/review_detail.html", context, partial="decision", status=status)


@role_required(REVIEWER)
@require_POST
def review_claim(request, pk: int):
    task = selectors.review_task_for(request.user, pk)
    try:
        task = services.review_claim(task_id=task.pk, user=request.user)
    except DomainError as exc:
        return _refuse(request, task, error=str(exc))
    carried = request.POST.get("edited_output")
    if carried is not None:
        # A re-claim after the lease ran out brings the reviewer's unsaved edit back.
        context = _detail_context(request, task, approve_form=ApproveForm(initial={"edited_output": carried}))
        return render_page(request, "workflows/review_detail.html", context, partial="decision")
    if not request.htmx:
        return redirect("review_detail", pk=task.pk)
    return _detail_page(request, selectors.review_task_for(request.user, pk))


@role_required(REVIEWER)
@require_POST
def review_next(request):
    """Claim the most urgent free item (of one lane, when the form names it) and open it."""
    lane = request.POST.get("lane") or None
    if lane is not None and lane not in QUEUE_LANES:
        messages.error(request, "Unknown lane; showing the blocking lane.")
        return redirect("review_queue")
    task = services.review_claim_next(user=request.user, lane=lane)
    if task is None:
        messages.info(request, "Nothing is waiting for you" + (f" in the {Lane(lane).label.lower()} lane." if lane else "."))
        return redirect(reverse("review_queue") + (f"?lane={lane}" if lane else ""))
    return redirect("review_detail", pk=task.pk)


@role_required(REVIEWER)
@require_POST
def review_release(request, pk: int):
    task = selectors.review_task_for(request.user, pk)
    try:
        task = services.review_release(task_id=task.pk, user=request.user)
    except DomainError as exc:
        return _refuse(request, task, error=str(exc))
    return _after_decision(request, task, f"Review of submission #{task.submission_id} released to the queue.")


def _not_decidable(request, task, forms):
    """Refuse a decision on a review the user does not hold, before validating the form, so
    the answer is a message the page can show (the decision forms appear only after a claim).
    The posted form goes back with it: an edit made while the lease ran out is not lost."""
    if refusal := services.review_refusal(task, request.user):
        return _refuse(request, task, error=refusal, **forms)
    return None


def _decide(request, pk: int, form_class, form_name: str, act, message):
    """One decision: scoped lookup, claim check, form, one service call, redirect."""
    task = selectors.review_task_for(request.user, pk)
    form = form_class(request.POST)
    if refusal := _not_decidable(request, task, {form_name: form}):
        return refusal
    if not form.is_valid():
        return _refuse(request, task, status=422, **{form_name: form})
    try:
        task = act(task, form.cleaned_data)
    except DomainError as exc:
        return _refuse(request, task, error=str(exc), **{form_name: form})
    return _after_decision(request, task, message(task))


def _approve_fields(request, pk: int):
    """Approve from the structured editor: the fields are assembled into the JSON output here,
    previewed as a diff when asked, checked against the schema, then one service call.
    Whatever goes wrong, the page comes back with the reviewer's values in the fields."""
    task = selectors.review_task_for(request.user, pk)
    data = request.POST
    if refusal := services.review_refusal(task, request.user):
        return _refuse(request, task, error=refusal, editor_data=data)
    draft = task.draft
    spec = task.submission.workflow_version.spec
    try:
        original = original_value(draft.content)
    except (ValueError, RecursionError):
        return _refuse(request, task, status=422, error="This draft is not JSON; edit it as text below.")
    value, errors = assemble(spec, original, data)
    if errors:
        first = next(iter(errors.values()))
        return _refuse(request, task, status=422, editor_data=data, editor_errors=errors,
                       error=f"{len(errors)} field{'s' if len(errors) > 1 else ''} could not be read: {first}")
    changed = dump(value) != dump(original)
    text = dump(value) if changed else draft.content
    problems = output_problems(spec, text)
    if "preview" in data:
        diff = output_diff(spec, draft.content, text) if changed else ""
        context = _detail_context(request, task, editor_data=data, problems=problems, preview_diff=diff or "none",
                                  error="; ".join(p.text for p in problems) if problems else None)
        return render_page(request, "workflows/review_detail.html", context, partial="decision")
    try:
        task = services.review_approve(task_id=task.pk, user=request.user, edited_output=text)
    except DomainError as exc:
        return _refuse(request, task, status=409 if not problems else 422, error=str(exc), editor_data=data,
                       problems=problems)
    changed_fields = sorted({field_label(p[:1], spec.output.json_schema) for p in _changed_paths(original, value)})
    return _after_decision(request, task, f"Submission #{task.submission_id} approved" + (
        f" with your edit (changed: {', '.join(changed_fields)})." if task.diff else "."))


def _changed_paths(before, after, path=()):
    """The paths whose values differ, for the success message ("changed: Reply")."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in dict.fromkeys([*before, *after]):
            yield from _changed_paths(before.get(key), after.get(key), (*path, key))
    elif dump(before) != dump(after):
        yield path


@role_required(REVIEWER)
@require_POST
def review_approve(request, pk: int):
    if request.POST.get(MARKER) == "fields" and "edited_output" not in request.POST:
        # Only JSON workflows render the editor; a stray marker on a text workflow is ignored.
        task = selectors.review_task_for(request.user, pk)
        if task.submission.workflow_version.spec.output.format == "json":
            return _approve_fields(request, pk)
    # A client that sends no text approves the draft as it is; a text box the reviewer emptied
    # is an (empty, refused) edit, not a silent approval of the original.
    sent_text = "edited_output" in request.POST
    return _decide(
        request, pk, ApproveForm, "approve_form",
        lambda task, data: services.review_approve(
            task_id=task.pk, user=request.user, edited_output=data["edited_output"] if sent_text else None
        ),
        lambda task: f"Submission #{task.submission_id} approved" + (" with your edit." if task.diff else "."),
    )


@role_required(REVIEWER)
@require_POST
def review_reject(request, pk: int):
    return _decide(
        request, pk, RejectForm, "reject_form",
        lambda task, data: services.review_reject(task_id=task.pk, user=request.user, **data),
        lambda task: f"Submission #{task.submission_id} rejected.",
    )


@role_required(REVIEWER)
@require_POST
def review_regenerate(request, pk: int):
    return _decide(
        request, pk, RegenerateForm, "regenerate_form",
        lambda task, data: services.review_regenerate(task_id=task.pk, user=request.user, **data),
        lambda task: f"Submission #{task.submission_id} sent back for a new draft.",
    )
