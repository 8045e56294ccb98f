"""Personal data stays out of the audit chain; retention purge, erasure requests and legal
holds clear the domain rows and their history, leave a tombstone, and the chain verifies."""
from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from tests.integration.conftest import drafted, submit
from workflows import audit, services, tasks
from workflows.definitions import DefinitionError, parse_definition
from workflows.models import (
    AuditEvent,
    DomainError,
    Draft,
    ErasureReason,
    LLMCall,
    ReviewTask,
    Submission,
    SubmissionState,
)

NAME, OTHER = "Zebulon Quackenbush", "Hortensia Blomqvist"
EMAIL = "zebulon.q@example.org"
COMPLAINT = f"{NAME} says the parcel Hortensia packed arrived broken; call him on 0171 555 0199."
FEEDBACK = f"Mention {OTHER} by name and apologise to Zebulon."
REASON = f"{OTHER} is not the courier; Zebulon asked for a refund."
EDITED = json.dumps({"reply": f"Dear {NAME}, {OTHER} will call you about the refund.", "tone": "apologetic"})
DRAFT_TEXT = json.dumps({"reply": f"Dear {NAME}, we are sorry your parcel arrived broken.", "tone": "apologetic"})
FAILURE = f"provider said: cannot process request about {NAME} <{EMAIL}>"
SECRETS = ("Zebulon", "Quackenbush", "Hortensia", "Blomqvist", EMAIL, "0171 555 0199", "parcel Hortensia")


@pytest.fixture
def personal_input(customer_reply_input):
    return {**customer_reply_input, "customer_name": NAME, "customer_email": EMAIL, "complaint": COMPLAINT}


def _full_loop(demo, data, user=None):
    """Submit, draft, send back with feedback, draft again, approve with an edit; submit, draft,
    reject with a reason; submit and fail. Returns the three submissions."""
    reviewer = demo.users["reviewer"]
    first = submit(demo, data, user=user)
    task = drafted(first, lane="blocking", content=DRAFT_TEXT).review_tasks.get()
    services.review_claim(task_id=task.pk, user=reviewer)
    services.review_regenerate(task_id=task.pk, user=reviewer, feedback=FEEDBACK)
    task = drafted(Submission.objects.get(pk=first.pk), lane="blocking", content=DRAFT_TEXT).review_tasks.get()
    services.review_claim(task_id=task.pk, user=reviewer)
    services.review_approve(task_id=task.pk, user=reviewer, edited_output=EDITED)

    second = submit(demo, data, user=user)
    task = drafted(second, lane="blocking", content=DRAFT_TEXT).review_tasks.get()
    services.review_claim(task_id=task.pk, user=reviewer)
    services.review_reject(task_id=task.pk, user=reviewer, reason_code="inaccurate", reason_text=REASON)

    third = submit(demo, data, user=user)
    claimed = services.generation_claim(submission_id=third.pk)
    services.generation_fail(submission_id=third.pk, attempt=claimed.attempts, kind="provider_error", reason=FAILURE)
    return [Submission.objects.get(pk=s.pk) for s in (first, second, third)]


def _dump(rows) -> str:
    return json.dumps([list(r) if not isinstance(r, dict) else r for r in rows], default=str, ensure_ascii=False)


def _personal_text_in(text: str) -> list[str]:
    return [s for s in SECRETS if s.lower() in text.lower()]


def test_no_form_value_or_reviewer_text_reaches_the_chain(demo, personal_input):
    start = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    first, second, third = _full_loop(demo, personal_input)
    assert (first.state, second.state, third.state) == (
        SubmissionState.APPROVED, SubmissionState.REJECTED, SubmissionState.FAILED)
    events = list(AuditEvent.objects.filter(id__gt=start))
    actions = {e.action for e in events}
    assert {"submission.created", "draft.generated", "review.regenerate_requested", "review.edited",
            "review.rejected", "output.released", "draft.failed"} <= actions
    for event in events:
        facts = audit.canonical_json(audit._hashed_fields(event))
        assert _personal_text_in(facts) == [], f"{event.action} carries personal data: {facts}"
    # What replaced the texts: their hashes, which prove what was written without holding it.
    regen = next(e for e in events if e.action == "review.regenerate_requested")
    assert regen.payload["feedback_hash"] == audit.content_hash(FEEDBACK)
    rejected = next(e for e in events if e.action == "review.rejected")
    assert rejected.payload["reason_text_hash"] == audit.content_hash(REASON)
    assert rejected.payload["reason_text_chars"] == len(REASON)
    failed = next(e for e in events if e.action == "draft.failed")
    assert failed.payload["error_hash"] == audit.content_hash(FAILURE)


def _personal_rows(submission_ids) -> str:
    """Everything the domain keeps about these submissions, current rows and history."""
    parts = [
        Submission.objects.filter(pk__in=submission_ids).values(),
        Submission.history.filter(id__in=submission_ids).values(),
        Draft.objects.filter(submission_id__in=submission_ids).values(),
        Draft.history.filter(submission_id__in=submission_ids).values(),
        ReviewTask.objects.filter(submission_id__in=submission_ids).values(),
        ReviewTask.history.filter(submission_id__in=submission_ids).values(),
        LLMCall.objects.filter(submission_id__in=submission_ids).values(),
    ]
    return "".join(_dump(list(p)) for p in parts)


def test_an_erasure_request_clears_rows_and_history_and_the_chain_verifies(demo, personal_input, make_user):
    person = make_user("erasable-person", "submitter")
    subs = _full_loop(demo, personal_input, user=person)
    ids = [s.pk for s in subs]
    assert _personal_text_in(_personal_rows(ids))  # the data was there
    kept = {s.pk: (s.state, s.lane, s.attempts) for s in subs}
    hashes = sorted(Draft.objects.filter(submission_id__in=ids).values_list("content_hash", "score", "cost_usd"))
    events_before = AuditEvent.objects.count()

    erased = services.erase_submissions_of(user_id=person.pk, actor=demo.users["compliance"], request_ref="DSR-1")

    assert sorted(erased) == sorted(ids)
    assert _personal_text_in(_personal_rows(ids)) == []
    for s in Submission.objects.filter(pk__in=ids):
        assert s.erased_at is not None and s.erasure_reason == ErasureReason.REQUEST and s.data == {}
        assert (s.state, s.lane, s.attempts) == kept[s.pk]  # the tombstone keeps what happened
    assert sorted(Draft.objects.filter(submission_id__in=ids).values_list("content_hash", "score", "cost_usd")) == hashes
    new = list(AuditEvent.objects.order_by("id")[events_before:])
    assert [e.action for e in new].count("submission.erased") == 3
    completed = new[-1]
    assert completed.action == "erasure.completed"
    assert sorted(completed.payload["submission_ids"]) == sorted(ids)
    assert completed.payload["request_ref_hash"] == audit.content_hash("DSR-1")
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok
    # A submission being drafted is not erased under the worker's feet.
    drafting = submit(demo, personal_input, user=person)
    with pytest.raises(DomainError, match=f"{drafting.pk} are being drafted"):
        services.erase_submissions_of(user_id=person.pk)
    Submission.objects.filter(pk=drafting.pk).update(state=SubmissionState.FAILED)
    assert services.erase_submissions_of(user_id=person.pk) == [drafting.pk]
    # Nothing left to erase the third time: no event for it but the (empty) completion.
    assert services.erase_submissions_of(user_id=person.pk) == []

    # The pages show a tombstone, never a 500.
    for who in ("compliance", "reviewer"):
        client = Client()
        client.force_login(demo.users[who])
        for s in subs:
            response = client.get(f"/submissions/{s.pk}/")
            assert response.status_code == 200
            body = response.content.decode()
            assert "erased on" in body and "at the person&#x27;s request" in body
            assert _personal_text_in(body) == []
    client = Client()
    client.force_login(demo.users["reviewer"])
    for task in ReviewTask.objects.filter(submission_id__in=ids):
        assert client.get(f"/review/{task.pk}/").status_code in (200, 404)  # decided tasks leave the queue
    client = Client()
    client.force_login(person)
    assert client.get("/submissions/").status_code == 200
    assert client.get(f"/submissions/{ids[0]}/").status_code == 200


def test_a_legal_hold_refuses_erasure_and_changes_nothing(demo, personal_input, make_user):
    person = make_user("held-person", "submitter")
    subs = _full_loop(demo, personal_input, user=person)
    workflow = subs[0].workflow_version.workflow
    services.legal_hold_set(actor=demo.users["compliance"], reason_ref="Matter 2026-17", workflow=workflow)
    hold_event = AuditEvent.objects.filter(action="legal_hold.set").latest("id")
    assert hold_event.payload == {"reference_hash": audit.content_hash("Matter 2026-17")}
    before = (_personal_rows([s.pk for s in subs]), AuditEvent.objects.count())

    with pytest.raises(DomainError, match="legal hold applies"):
        services.erase_submissions_of(user_id=person.pk)
    with pytest.raises(CommandError, match="legal hold applies"):
        call_command("erase_submitter", "--username", person.username, stdout=StringIO())
    assert (_personal_rows([s.pk for s in subs]), AuditEvent.objects.count()) == before

    # A submission-level hold works the same way once the workflow's is lifted.
    services.legal_hold_set(actor=None, reason_ref="", workflow=workflow, hold=False)
    services.legal_hold_set(actor=None, reason_ref="Matter 2026-18", submission=subs[1])
    with pytest.raises(DomainError, match=f"submission\\(s\\) {subs[1].pk}"):
        services.erase_submissions_of(user_id=person.pk)
    services.legal_hold_set(actor=None, reason_ref="", submission=subs[1], hold=False)
    out = StringIO()
    call_command("erase_submitter", "--username", person.username, "--request-ref", "DSR-2", stdout=out)
    assert "erased 3 submission(s)" in out.getvalue() and "audit chain ok" in out.getvalue()


def _age(submission, days):
    Submission.objects.filter(pk=submission.pk).update(created_at=timezone.now() - timedelta(days=days))


def test_the_purge_erases_past_retention_only_and_skips_holds(demo, personal_input, publish_variant):
    old, young, held = (submit(demo, personal_input) for _ in range(3))
    long_kept = services.submission_create(
        version=publish_variant("customer-reply", "long-kept", retention_days=400),
        user=demo.users["submitter"], data=personal_input)
    for s in (old, held, long_kept):
        drafted(s, lane="blocking", content=DRAFT_TEXT)
        _age(s, 200)
    _age(young, 100)
    services.legal_hold_set(actor=None, reason_ref="Matter 9", submission=held)

    assert tasks.purge_expired_submissions.run() >= 1
    erased = set(Submission.objects.filter(erased_at__isnull=False).values_list("pk", flat=True))
    assert old.pk in erased
    assert {young.pk, held.pk, long_kept.pk}.isdisjoint(erased)
    old.refresh_from_db()
    assert old.erasure_reason == ErasureReason.RETENTION and old.data == {}
    assert _personal_text_in(_personal_rows([old.pk])) == []
    event = AuditEvent.objects.filter(action="retention.purged").latest("id")
    assert old.pk in event.payload["submission_ids"] and event.payload["count"] == len(event.payload["submission_ids"])
    assert _personal_text_in(json.dumps(event.payload)) == []
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok
    # A second run finds nothing and writes nothing.
    count = AuditEvent.objects.count()
    assert tasks.purge_expired_submissions.run() == 0
    assert AuditEvent.objects.count() == count


def test_retention_days_defaults_to_the_floor_and_refuses_less(demo):
    spec = demo.version("customer-reply").spec.as_dict()
    assert parse_definition(spec).retention_days == 183
    assert parse_definition({**spec, "retention_days": 365}).retention_days == 365
    with pytest.raises(DefinitionError) as refused:
        parse_definition({**spec, "retention_days": 90})
    assert refused.value.errors[0][0] == "retention_days" and "at least 183" in refused.value.errors[0][1]


def test_an_erased_submission_awaiting_review_still_renders(demo, personal_input, make_user):
    person = make_user("erased-in-review", "submitter")
    submission = submit(demo, personal_input, user=person)
    task = drafted(submission, lane="blocking", content=DRAFT_TEXT).review_tasks.get()
    services.erase_submissions_of(user_id=person.pk)
    client = Client()
    client.force_login(demo.users["reviewer"])
    for url in (f"/review/{task.pk}/", f"/submissions/{submission.pk}/", "/review/"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert _personal_text_in(response.content.decode()) == [], url
        if url != "/review/":
            assert "at the person&#x27;s request" in response.content.decode(), url
