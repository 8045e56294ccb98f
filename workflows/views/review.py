"""The reviewer's queue and decisions. Each POST is one service call."""
from urllib.parse import urlencode

from django.contrib import messages
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
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
from ..vocab import Finding
from .common import keyset_paginate, render_page, role_required

QUEUE_LANES = [Lane.BLOCKING_REVIEW, Lane.ASYNC_REVIEW]
EARLIER_DRAFTS = 3  # the latest ones before this draft, side by side
TIMELINE_EVENTS = 100  # the review page's trail; the submission page has the whole of it
# Bounds the start index a keyset page link may claim (display only; the cursor picks the rows).
_MAX_START = 10**9


def _queue_context(request, filters):
    """The queue page: one keyset page of the tab, capped counts, the filters. A fixed number
    of queries whatever the number of open tasks (tests/bench/bench_queue.py asserts it)."""
    page = keyset_paginate(request, selectors.queue_tasks(request.user, filters))
    try:
        start = min(max(int(request.GET.get("start") or 1), 1), _MAX_START) if not page.is_first else 1
    except ValueError:
        start = 1
    counts = selectors.queue_counts_capped(request.user, filters)
    now = timezone.now()
    approved = selectors.queue_approved_by(request.user, [t.pk for t in page.rows]) if any(
        t.approvals_given for t in page.rows) else set()
    detail = reverse("review_detail", args=[0]).removesuffix("0/")  # one reverse() for the page, not two a row
    for task in page.rows:
        task.url = f"{detail}{task.pk}/"
        task.held_by_other = task.lease_active and task.claimed_by_id != request.user.pk
        task.i_approved = task.pk in approved
        task.findings_list = task.finding_codes.split()
        task.may_confirm = (filters.tab == Lane.ASYNC_REVIEW and not task.findings_list and not task.held_by_other
                            and task.approvals_required == 1)
    notices = list(filters.notices) + ([page.notice] if page.notice else [])
    query = filters.as_query()
    list_url = reverse("review_queue") + "?" + urlencode(query)
    return {
        "list_url": list_url,
        "poll_url": reverse("review_queue_counts") + "?" + urlencode({**query, "shown": counts[filters.tab]}),
        "next_url": list_url + "&" + urlencode({"after": page.next_cursor, "start": start + len(page.rows)})
        if page.next_cursor else "",
        "lane": filters.tab,
        "filters": filters,
        "query": filters.as_query(),
        "lanes": [(value, label) for value, (label, _) in selectors.QUEUE_TABS.items()],
        "counts": counts,
        "count": counts[filters.tab],
        "count_cap": selectors.QUEUE_COUNT_CAP,
        "page": page,
        "tasks": page.rows,
        "start": start,
        "end": start + len(page.rows) - 1,
        "now": now,
        "notices": notices,
        "workflows": selectors.queue_workflows(request.user),
        "ages": [("", "Any age"), ("1h", "Waiting over 1 hour"), ("4h", "Waiting over 4 hours"),
                 ("1d", "Waiting over 1 day"), ("7d", "Waiting over 7 days")],
        "findings": [("", "With or without findings"), ("none", "No findings"), ("any", "Any finding")]
        + [(code, code.replace("_", " ")) for code in Finding],
        "confirmable": [t for t in page.rows if t.may_confirm],
        "bulk_cap": services.BULK_CONFIRM_CAP,
    }


@role_required(REVIEWER)
@require_safe
def review_queue(request):
    filters = selectors.queue_filters(request.user, request.GET)
    return render_page(request, "workflows/review_queue.html", _queue_context(request, filters), partial="queue")


@role_required(REVIEWER)
@require_safe
def review_queue_counts(request):
    """The live counts, polled every 15 s by the queue page: out-of-band swaps of the three
    tab counts, and a "new items" notice when the tab's count moved since the page was shown.
    Capped LIMITed counts, so a poll costs the same at any queue length."""
    filters = selectors.queue_filters(request.user, request.GET)
    counts = selectors.queue_counts_capped(request.user, filters)
    try:
        shown = int(request.GET.get("shown", ""))
    except ValueError:
        shown = None
    context = {"counts": counts, "lanes": [(v, label) for v, (label, _) in selectors.QUEUE_TABS.items()],
               "count_cap": selectors.QUEUE_COUNT_CAP, "lane": filters.tab, "query": filters.as_query(),
               "list_url": reverse("review_queue") + "?" + urlencode(filters.as_query()),
               "changed": shown is not None and shown != counts[filters.tab], "count": counts[filters.tab]}
    response = render(request, "workflows/review_queue.html#counts", context)
    patch_vary_headers(response, ["HX-Request"])
    return response


@role_required(REVIEWER)
@require_POST
def review_lease(request, pk: int):
    """The review page's heartbeat: renew the lease this reviewer holds (JSON for static/js/app.js;
    409 with the reason when the lease is gone, so the page can say so at once)."""
    task = selectors.review_task_for(request.user, pk)
    try:
        expires = services.review_lease_renew(task_id=task.pk, user=request.user)
    except DomainError as exc:
        return JsonResponse({"ok": False, "error": str(exc), "held_by_other": getattr(exc, "held_by_other", False)},
                            status=409)
    return JsonResponse({"ok": True, "expires_at": expires.isoformat(), "until": f"{expires:%H:%M} UTC"})


def _bulk_ids(request, key="task"):
    values = request.POST.getlist(key)
    if request.POST.get("all") == "1":
        values = request.POST.getlist("page_task")
    ids = []
    for value in values:
        try:
            ids.append(int(value))
        except ValueError:
            continue
    return [pk for pk in ids if 0 < pk < 2**63]


@role_required(REVIEWER)
@require_POST
def review_bulk_confirm(request):
    """Bulk confirm, in two steps that both work without JavaScript: the selection posts here
    and gets a confirmation page ("Confirm 12 released drafts as reviewed?"); its button posts
    the same ids with confirm=1, and one service call approves each and reports the skipped."""
    back = reverse("review_queue") + f"?lane={Lane.ASYNC_REVIEW}"
    ids = _bulk_ids(request)
    if request.POST.get("confirm") == "1":
        try:
            result = services.review_bulk_confirm(user=request.user, task_ids=ids)
        except DomainError as exc:
            messages.error(request, str(exc))
            return redirect(back)
        if result.confirmed:
            messages.success(request, f"Confirmed {len(result.confirmed)} released "
                             f"draft{'s' if len(result.confirmed) != 1 else ''} as reviewed: "
                             + ", ".join(f"#{pk}" for pk in result.confirmed) + ".")
        if result.skipped:
            messages.warning(request, f"Skipped {len(result.skipped)}: "
                             + "; ".join(f"{label} ({reason})" for label, reason in result.skipped) + ".")
        return redirect(back)
    try:
        candidates = services.bulk_confirm_candidates(user=request.user, task_ids=ids)
    except DomainError as exc:
        messages.error(request, str(exc))
        return redirect(back)
    context = {"candidates": candidates, "skipped": len(set(ids)) - len(candidates), "back": back}
    return render_page(request, "workflows/review_bulk_confirm.html", context)


def _approvals_context(task, user) -> dict:
    if task.approvals_required < 2 or not task.approvals_given:
        return {"approvers": [], "i_approved": False}
    approvers = selectors.current_approvers(task)
    return {"approvers": [u.get_username() for u in approvers], "i_approved": any(u.pk == user.pk for u in approvers)}


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
    # With two approvals, the second reviewer is shown the text the first one approved.
    text = task.pending_output or draft.content
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
        or ApproveForm(initial={"edited_output": pretty_json(text) if is_json else text}),
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
        # Two approvals (routing.two_approvals): who approved the current text so far.
        **_approvals_context(task, request.user),
    }
    if is_json and not submission.is_erased:
        try:
            # With two approvals the editor starts from the text the first reviewer approved.
            original = original_value(text)
        except (ValueError, RecursionError):
            original = None  # not JSON at all: only the text box can fix it
        if original is not None and forms.get("editor_text"):
            try:  # a carried edit (re-claim) fills the fields; the draft stays the reference
                original = original_value(forms["editor_text"])
            except (ValueError, RecursionError):
                pass  # not JSON: the text box below holds it
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
    if carried is not None or request.POST.get(MARKER) == "fields":
        # A re-claim after the lease ran out brings the reviewer's unsaved edit back: the
        # structured editor's fields when the page sent them (static/js/app.js copies them),
        # else the text, which also seeds the editor when it is JSON.
        forms = {"approve_form": ApproveForm(initial={"edited_output": carried or ""})}
        if request.POST.get(MARKER) == "fields":
            forms["editor_data"] = request.POST
        elif carried:
            forms["editor_text"] = carried
        context = _detail_context(request, task, **forms)
        return render_page(request, "workflows/review_detail.html", context, partial="decision")
    if not request.htmx:
        return redirect("review_detail", pk=task.pk)
    return _detail_page(request, selectors.review_task_for(request.user, pk))


@role_required(REVIEWER)
@require_POST
def review_next(request):
    """Claim the most urgent free item (of one lane, when the form names it) and open it."""
    lane = request.POST.get("lane") or None
    if lane is not None and lane not in selectors.QUEUE_TABS:
        messages.error(request, "Unknown lane; showing the blocking lane.")
        return redirect("review_queue")
    task_id = services.review_claim_next(user=request.user, lane=lane)
    if task_id is None:
        label = selectors.QUEUE_TABS[lane][0].lower() if lane else ""
        messages.info(request, "Nothing is waiting for you" + (f" in the {label} tab." if lane else "."))
        return redirect(reverse("review_queue") + (f"?lane={lane}" if lane else ""))
    return redirect("review_detail", pk=task_id)


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
    draft = task.draft
    spec = task.submission.workflow_version.spec
    if refusal := services.review_refusal(task, request.user):
        return _refuse(request, task, error=refusal, editor_data=data,
                       approve_form=ApproveForm({"edited_output": _fields_text(spec, task, data)}))
    try:
        original = original_value(task.pending_output or draft.content)
    except (ValueError, RecursionError):
        return _refuse(request, task, status=422, error="This draft is not JSON; edit it as text below.")
    value, errors = assemble(spec, original, data)
    if errors:
        first = next(iter(errors.values()))
        return _refuse(request, task, status=422, editor_data=data, editor_errors=errors,
                       error=f"{len(errors)} field{'s' if len(errors) > 1 else ''} could not be read: {first}")
    base = task.pending_output or draft.content
    changed = dump(value) != dump(original)
    text = dump(value) if changed else base
    problems = output_problems(spec, text)
    if "preview" in data:
        diff = output_diff(spec, base, text) if changed else ""
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


def _fields_text(spec, task, data) -> str:
    """The editor's posted fields as the JSON text they make (what a refused reviewer keeps to
    copy or carry into a re-claim), or the draft's text when they cannot be read."""
    base = task.pending_output or task.draft.content
    try:
        value, errors = assemble(spec, original_value(base), data)
    except (ValueError, RecursionError):
        return base
    return base if errors else dump(value)


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
