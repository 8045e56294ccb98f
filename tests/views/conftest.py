"""Fixtures for the HTTP tests: one user per position in the permission matrix, and routed
submissions made through the real services (no worker: the completion is built by hand, so
the lane is chosen by the test).
"""
from __future__ import annotations

import json

import pytest
from django.test import Client

from tests.conftest import CUSTOMER_REPLY_INPUT
from tests.scripted import scripted_result
from workflows import services
from workflows.models import Submission

# Token probability that lands a customer-reply draft in each lane (auto >= 0.90, block < 0.60).
LANE_PROBABILITY = {"auto_approve": 0.99, "async_review": 0.75, "blocking_review": 0.30}

UNDERWRITING_INPUT = {
    "business_name": "Acme Bakery",
    "sector": "retail",
    "years_trading": 4,
    "loan_amount": "25000",
    "annual_revenue": "180000",
    "existing_debt": "0",
    "notes": "",
    "collateral_offered": False,
}
DRAFT_CONTENT = {
    "customer-reply": {"reply": "Dear customer, we are sorry about the parcel.", "tone": "apologetic"},
    "underwriting-memo": {"recommendation": "refer", "rationale": "Thin file.", "risks": ["short history"]},
}
DEFAULT_INPUT = {"customer-reply": CUSTOMER_REPLY_INPUT, "underwriting-memo": UNDERWRITING_INPUT}


@pytest.fixture
def people(demo, make_user):
    """Everyone the permission matrix names. Group A = support-reviewers (customer-reply),
    group B = underwriting-reviewers (underwriting-memo)."""
    return {
        "submitter": demo.users["submitter"],
        "other_submitter": make_user("other-submitter", "submitter"),
        "reviewer_a": make_user("reviewer-a", "reviewer", "support-reviewers"),
        "reviewer_b": make_user("reviewer-b", "reviewer", "underwriting-reviewers"),
        # Submits and reviews customer replies: the four-eyes rule must keep them off their own.
        "dual": make_user("dual", "submitter", "reviewer", "support-reviewers"),
        "compliance": demo.users["compliance"],
        "wfadmin": demo.users["wfadmin"],
    }


@pytest.fixture
def client_for(people):
    """A fresh test client logged in as one of ``people`` (or anonymous for None)."""

    def make(who: str | None) -> Client:
        client = Client()
        if who is not None:
            client.force_login(people[who] if isinstance(who, str) else who)
        return client

    return make


@pytest.fixture
def routed(demo):
    """Create a submission and route its first draft to ``lane`` through services.draft_record."""

    def make(user, lane: str = "blocking_review", slug: str = "customer-reply", data=None, content=None,
             sampled: bool = False) -> Submission:
        submission = services.submission_create(
            version=demo.version(slug), user=user, data=dict(data or DEFAULT_INPUT[slug])
        )
        claimed = services.generation_claim(submission_id=submission.pk)
        result = scripted_result(
            submission.workflow_version.spec, submission.data, probability=LANE_PROBABILITY[lane],
            content=content if content is not None else json.dumps(DRAFT_CONTENT[slug]),
        )
        # Never drawn for the audit sample unless the test asks: the draw must not depend on
        # which primary key this test happens to get.
        draft = services.draft_record(submission_id=submission.pk, attempt=claimed.attempts, result=result,
                                      audit_draw=0.0 if sampled else 0.999)
        assert draft is not None and draft.lane == lane, f"fixture meant {lane}, routing said {draft and draft.lane}"
        submission.refresh_from_db()
        return submission

    return make
