"""Refused access is an audit fact (`auth.denied`), written without personal data and
rate-limited so that a scanner walking ids cannot flood the chain."""
from __future__ import annotations

import pytest
from django.core.cache import caches

from tests.conftest import CUSTOMER_REPLY_INPUT
from workflows import audit
from workflows.models import AuditEvent, ReviewTask

PERSONAL = [str(v) for v in CUSTOMER_REPLY_INPUT.values() if isinstance(v, str) and len(v) > 5]


@pytest.fixture(autouse=True)
def _fresh_limits(settings, people):
    """This minute's count for the users here starts at zero (other tests of the run may have
    been refused as the same demo users). Only these keys: the cache is shared with other runs."""
    cache = caches[settings.REVIEWDESK_DRAFT_CACHE]
    cache.delete_many([f"denied:user:{user.pk}" for user in people.values()])


def _denials():
    return list(AuditEvent.objects.filter(action="auth.denied").order_by("id"))


def _no_personal_data(event):
    facts = audit.canonical_json(audit._hashed_fields(event))
    assert [p for p in PERSONAL if p in facts] == [], facts


def test_a_role_page_writes_one_denial(people, client_for):
    before = len(_denials())
    assert client_for("submitter").get("/audit/").status_code == 404
    new = _denials()[before:]
    assert len(new) == 1
    event = new[0]
    assert event.actor_id == people["submitter"].pk
    assert event.object_type == "page" and event.payload["path"] == "/audit/"
    assert event.payload["what"] == "role page: compliance"
    _no_personal_data(event)
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok


def test_an_object_outside_scope_writes_one_denial(people, routed, client_for):
    submission = routed(people["submitter"])
    before = len(_denials())
    assert client_for("other_submitter").get(f"/submissions/{submission.pk}/").status_code == 404
    new = _denials()[before:]
    assert len(new) == 1
    assert (new[0].object_type, new[0].object_id) == ("submission", str(submission.pk))
    assert new[0].actor_id == people["other_submitter"].pk
    _no_personal_data(new[0])
    # A reviewer of another group, on a review task: the same.
    task = ReviewTask.objects.get(submission=submission)
    assert client_for("reviewer_b").get(f"/review/{task.pk}/").status_code == 404
    assert [(e.object_type, e.object_id) for e in _denials()[before + 1:]] == [("reviewtask", str(task.pk))]


def test_a_missing_object_is_recorded_like_one_out_of_scope(client_for):
    # Same 404, same event: the response must not tell "exists" from "not yours".
    before = len(_denials())
    assert client_for("compliance").get("/submissions/999999999/").status_code == 404
    assert len(_denials()) == before + 1


def test_anonymous_requests_are_sent_to_login_without_an_event(client_for):
    before = len(_denials())
    response = client_for(None).get("/audit/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert len(_denials()) == before


def test_a_hundred_refusals_in_a_minute_write_at_most_the_limit(client_for, settings):
    settings.REVIEWDESK_DENIED_EVENTS_PER_MINUTE = 5
    client = client_for("submitter")
    before = len(_denials())
    for i in range(100):
        assert client.get(f"/submissions/{900000000 + i}/").status_code == 404
    assert len(_denials()) - before == 5
    # Another user has their own allowance.
    assert client_for("other_submitter").get("/audit/").status_code == 404
    assert len(_denials()) - before == 6
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok
