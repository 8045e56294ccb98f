"""Evidence per submission: one printable page and one JSON file holding everything that
decided it (DESIGN.md section 5), in the scope and with the view of the submission page.

Every download is an `evidence.exported` audit event, as every audit export is: the bundle
carries personal data out of the application, and an auditor must be able to ask who took
it and when. The event's object is the evidence (object type "evidence", the submission's
id), not the submission, so downloads do not crowd the submission's own trail.
"""
from __future__ import annotations

import json

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse
from django.views.decorators.http import require_GET

from .. import audit, selectors
from ..audit import GENESIS_HASH, _hashed_fields
from ..vocab import AuditAction
from .common import render_page

FORMAT = "reviewdesk-evidence/1"
HASH_RULE = "hash = sha256_hex(utf8(prev_hash + canonical_json(hashed_fields)))"
CANONICAL_RULE = (
    "canonical_json: JSON with object keys sorted, no whitespace (separators ',' and ':'), "
    "non-ASCII characters written as themselves (not \\u escapes), encoded as UTF-8; in Python: "
    "json.dumps(value, sort_keys=True, separators=(',', ':'), ensure_ascii=False)"
)
HOW_TO_VERIFY = [
    "Each audit event below carries the exact fields its hash covers (hashed_fields), the hash "
    "of the event before it in the whole chain (prev_hash) and its own hash.",
    "Recompute every event's hash: SHA-256 of prev_hash followed by the canonical JSON of "
    "hashed_fields, as hexadecimal. It must equal the event's hash; if any stored fact had been "
    "changed, it would not.",
    "The events of one submission are not neighbours in the chain (other submissions' events "
    "sit between them), so this bundle checks each event on its own. To check the links as "
    "well, find these hashes in a full audit export and run tools/verify_export.py on it; "
    "docs/COMPLIANCE.md explains both, for a reader who has never seen ReviewDesk.",
    "An event with seq, prev_hash and hash null was recorded moments before this download and "
    "is not linked into the chain yet (events are linked within seconds of being recorded); "
    "download the bundle again to get its links.",
]


def _bundle(request, pk: int, kind: str):
    submission = selectors.submission_for(request.user, pk)
    evidence = selectors.evidence_for(request.user, submission)
    audit.record_standalone(
        action=AuditAction.EVIDENCE_EXPORTED,
        object_type="evidence",
        object_id=submission.pk,
        actor=request.user,
        workflow_version=submission.workflow_version,
        payload={"submission_id": submission.pk, "format": kind, "view": "full" if evidence.full else "submitter"},
    )
    return evidence


# GET only, not HEAD either: every view of the bundle writes an audit event.
@require_GET
def evidence_page(request, pk: int):
    evidence = _bundle(request, pk, "html")
    for event in evidence.events:
        event.payload_text = json.dumps(event.payload, sort_keys=True, ensure_ascii=False)
    context = {
        "evidence": evidence,
        "submission": evidence.submission,
        "how_to_verify": HOW_TO_VERIFY,
        "hash_rule": HASH_RULE,
        "canonical_rule": CANONICAL_RULE,
        "genesis_hash": GENESIS_HASH,
    }
    return render_page(request, "workflows/evidence.html", context)


@require_GET
def evidence_json(request, pk: int):
    evidence = _bundle(request, pk, "json")
    body = json.dumps(evidence_document(evidence), cls=DjangoJSONEncoder, ensure_ascii=False, indent=2)
    response = HttpResponse(body, content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="submission-{evidence.submission.pk}-evidence.json"'
    return response


def evidence_document(evidence: selectors.Evidence) -> dict:
    """The bundle as a self-describing JSON document (format reviewdesk-evidence/1)."""
    submission = evidence.submission
    document = {
        "format": FORMAT,
        "generated_at": evidence.generated_at,
        "generated_by": evidence.viewer.get_username(),
        "view": "full" if evidence.full else "submitter",
        "submission": _submission(evidence),
        "input": evidence.inputs,
        "decisions": [_decision(task, evidence.full) for task in evidence.decisions],
        "history": evidence.history,
    }
    if evidence.full:
        document["drafts"] = [_draft(draft) for draft in evidence.drafts]
        document["model_calls"] = [_call(call) for call in evidence.calls]
        document["cost"] = evidence.cost
        document["audit_events"] = [_event(event) for event in evidence.events]
        document["verification"] = {
            "algorithm": "sha256",
            "rule": HASH_RULE,
            "canonical_json": CANONICAL_RULE,
            "genesis_prev_hash": GENESIS_HASH,
            "how_to_verify": HOW_TO_VERIFY,
            "tools": ["tools/verify_export.py", "docs/COMPLIANCE.md"],
        }
    else:
        # The submission page shows the submitter when and by whom each step happened, not
        # the events' recorded details (they hold draft hashes and reviewers' words).
        document["audit_events"] = [
            {"created_at": e.created_at, "actor": e.actor_label, "action": e.action, "hash": e.hash}
            for e in evidence.events
        ]
        document["verification"] = {
            "note": "This copy is the submitter's: it leaves out the events' recorded details, so "
            "their hashes cannot be recomputed from it. The compliance team holds a full copy.",
        }
    document["workflow"] = {"slug": submission.workflow_version.workflow.slug,
                            "name": submission.workflow_version.workflow.name,
                            "version": submission.workflow_version.number,
                            "definition_hash": submission.workflow_version.definition_hash}
    return document


def _submission(evidence) -> dict:
    s = evidence.submission
    row = {
        "id": s.pk,
        "submitted_by": s.submitted_by.get_username(),
        "created_at": s.created_at,
        "state": s.state,
        "lane": s.lane,
        "attempts": s.attempts,
        "released_at": s.released_at,
        "retracted_at": s.retracted_at,
        "released_output": s.final_output if s.is_released else None,
    }
    if s.is_failed:
        row["failure_message"] = s.failure_message
    if evidence.full:
        row.update(final_output=s.final_output, failure_kind=s.failure_kind, failure_reason=s.failure_reason,
                   regenerate_feedback=s.regenerate_feedback)
    return row


def _draft(draft) -> dict:
    return {
        "id": draft.pk,
        "attempt": draft.attempt,
        "created_at": draft.created_at,
        "engine": draft.engine,
        "model_requested": draft.model_requested,
        "model": draft.model,
        "content": draft.content,
        "content_hash": draft.content_hash,
        "score": draft.score,
        "score_components": draft.score_components,
        "findings": draft.findings,
        "lane": draft.lane,
        "prompt_tokens": draft.prompt_tokens,
        "completion_tokens": draft.completion_tokens,
        "cost_usd": draft.cost_usd,
        "latency_ms": draft.latency_ms,
        "cache_hit": draft.cache_hit,
        "earlier_attempts": draft.earlier_attempts,
    }


def _call(call) -> dict:
    return {
        "id": call.pk,
        "attempt": call.attempt,
        "created_at": call.created_at,
        "purpose": call.purpose,
        "engine": call.engine,
        "model_requested": call.model,
        "model_answered": call.model_reported,
        "outcome": call.outcome,
        "ok": call.ok,
        "http_status": call.http_status,
        "error": call.error,
        "dropped_parameters": call.dropped_parameters,
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "cached_tokens": call.cached_tokens,
        "cost_usd": call.cost_usd,
        "latency_ms": call.latency_ms,
    }


def _decision(task, full: bool) -> dict:
    row = {
        "review_task_id": task.pk,
        "draft_attempt": task.draft.attempt,
        "lane": task.lane,
        "sampled_for_audit": task.sampled,
        "decision": task.decision,
        "decided_by": task.decided_by.get_username() if task.decided_by else "",
        "decided_at": task.decided_at,
        "reason_code": task.reason_code,
        "reason": task.get_reason_code_display() if task.reason_code else "",
    }
    if full:
        # The reviewer's words and edits may quote the unreleased draft (as on the page).
        row.update(reason_text=task.reason_text, edited_output=task.edited_output, diff=task.diff)
    return row


def _event(event) -> dict:
    return {
        "id": event.pk,
        # The chain position; null (with prev_hash and hash) for an event recorded moments ago
        # and not linked into the chain yet: a later download has its links.
        "seq": event.seq,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
        "hashed_fields": _hashed_fields(event),
    }
