"""Bad input gets a 4xx and a message, never a 500, and nothing already saved is lost."""
from __future__ import annotations

import pytest

from workflows.models import AuditEvent, ReviewTask, Submission

from .html import Page

BIG = "9" * 30  # beyond any database integer


@pytest.mark.parametrize(
    "path",
    [
        "/submissions/abc/",
        "/submissions/-1/",
        "/submissions/1.5/",
        f"/submissions/{BIG}/",
        "/review/abc/",
        f"/review/{BIG}/",
        "/review/abc/claim/",
        "/workflows/customer-reply/new/abc/",
        "/workflows/customer-reply/new/-1/",
        f"/workflows/customer-reply/new/{BIG}/",
        "/workflows/Not%20A%20Slug/new/",
        "/workflows/../new/",
    ],
)
def test_junk_ids_and_slugs_are_404(client_for, path):
    # The demo reviewer reviews every workflow; compliance reads everything: if anyone got a
    # 500 from a junk id, one of these would.
    for who in ("submitter", "reviewer_a", "compliance"):
        client = client_for(who)
        assert client.get(path).status_code == 404, (who, path)


@pytest.mark.parametrize("action", ["claim", "approve", "reject", "regenerate"])
def test_decisions_on_missing_tasks_are_404(client_for, action):
    assert client_for("reviewer_a").post(f"/review/{BIG}/{action}/").status_code == 404
    assert client_for("reviewer_a").post(f"/review/0/{action}/").status_code == 404


WIZARD_GARBAGE = [
    ("customer-reply", 1, {"customer_name": "\x00", "customer_email": "a@b@c", "channel": ["email", "chat"]}),
    ("customer-reply", 1, {"customer_name": ["a", "b"], "channel": "\x00", "nav": "sideways", "junk": "x" * 100_000}),
    ("customer-reply", 1, {"customer_name": "x" * 100_000, "customer_email": "\x00@example.com", "channel": "email"}),
    ("customer-reply", 2, {"complaint": "", "order_value": "NaN"}),
    ("customer-reply", 2, {"complaint": "ok", "order_value": "Infinity"}),
    ("customer-reply", 2, {"complaint": "ok", "order_value": "1e99999"}),
    ("customer-reply", 2, {"complaint": "ok", "order_value": "-0.00001"}),
    ("customer-reply", 2, {"complaint": "ok", "order_value": "12345678901234567890.5"}),
    ("customer-reply", 2, {"complaint": "\x00", "order_value": "1,5"}),
    ("compliance-report", 1, {"incident_date": "2024-02-30", "business_unit": "retail", "severity": "low"}),
    ("compliance-report", 1, {"incident_date": "99999-01-01", "business_unit": "\x00", "severity": "extreme"}),
    ("compliance-report", 2, {"summary": "s", "customers_affected": "1e3", "regulations": ["GDPR", "SOX"]}),
    ("compliance-report", 2, {"summary": "s", "customers_affected": "9" * 5000}),
    ("compliance-report", 2, {"summary": "s", "customers_affected": "-1"}),
    ("compliance-report", 3, {"reporter_email": "<script>@x"}),
    ("underwriting-memo", 1, {"business_name": "B", "sector": "retail", "years_trading": "201"}),
    ("underwriting-memo", 2, {"loan_amount": "", "annual_revenue": "abc"}),
]


@pytest.mark.parametrize("slug, step, post", WIZARD_GARBAGE)
def test_garbage_in_the_wizard_is_422(client_for, slug, step, post):
    client = client_for("submitter")
    for headers in ({}, {"HX-Request": "true"}):
        response = client.post(f"/workflows/{slug}/new/{step}/", post, headers=headers)
        assert response.status_code == 422, headers
        assert Page(response).all("p", class_="error"), "the page says what is wrong"
    assert Submission.objects.count() == 0
    # The step still renders with what was typed kept in the session.
    assert client.get(f"/workflows/{slug}/new/{step}/").status_code == 200


def test_a_long_valid_text_survives_the_session(client_for):
    client = client_for("submitter")
    long_complaint = "word " * 1500
    client.post("/workflows/customer-reply/new/1/", {"customer_name": "Ann", "channel": "chat"})
    client.post("/workflows/customer-reply/new/2/", {"complaint": long_complaint, "order_value": "x", "nav": "back"})
    assert Page(client.get("/workflows/customer-reply/new/2/")).value("complaint") == long_complaint.strip()


@pytest.fixture
def claimed(people, routed, client_for):
    submission = routed(people["submitter"], lane="blocking_review")
    task = ReviewTask.objects.get(submission=submission)
    client = client_for("reviewer_a")
    assert client.post(f"/review/{task.pk}/claim/").status_code == 302
    return client, task


REVIEW_GARBAGE = [
    ("approve", {"edited_output": "\x00"}),
    ("approve", {"edited_output": "not json at all"}),
    ("approve", {"edited_output": '{"reply": 1, "tone": "smug"}'}),
    ("reject", {"reason_code": "bogus", "reason_text": "x"}),
    ("reject", {"reason_code": "", "reason_text": "x"}),
    ("reject", {"reason_code": "tone", "reason_text": "\x00"}),
    ("reject", {"reason_code": "tone", "reason_text": "x" * 4001}),
    ("regenerate", {"feedback": "\x00"}),
    ("regenerate", {"feedback": "x" * 4001}),
    ("regenerate", {}),
]


@pytest.mark.parametrize("action, post", REVIEW_GARBAGE)
def test_garbage_decisions_are_4xx_and_change_nothing(claimed, action, post):
    client, task = claimed
    events = AuditEvent.objects.count()
    response = client.post(f"/review/{task.pk}/{action}/", post)
    assert response.status_code in (409, 422)
    page = Page(response)
    assert page.all("p", class_="error"), "the page says what is wrong"
    task.refresh_from_db()
    assert task.state == "open" and task.decision == ""
    assert task.submission.state == "routed"
    assert AuditEvent.objects.count() == events


def test_schema_invalid_edit_names_the_problem(claimed):
    client, task = claimed
    response = client.post(f"/review/{task.pk}/approve/", {"edited_output": '{"reply": "hi"}'})
    assert response.status_code == 409
    (alert,) = Page(response).all("p", role="alert")
    assert "does not match the schema" in alert.text and "tone" in alert.text
    # What the reviewer typed is still in the box.
    assert Page(response).value("edited_output") == '{"reply": "hi"}'


@pytest.mark.parametrize(
    "query", ["?page=abc", "?page=-5", f"?page={BIG}", "?page=", "?verify=yes&page=2", "?lane=x&page=1.5"]
)
def test_audit_log_junk_pages_are_tolerated(client_for, routed, people, query):
    routed(people["submitter"])
    response = client_for("compliance").get("/audit/" + query)
    assert response.status_code == 200
    assert Page(response).all("tr"), "the trail is listed"


@pytest.mark.parametrize("action", ["\x00", "x" * 65, "review.approved\x00"])
def test_audit_log_impossible_filter_is_400_with_a_message(client_for, routed, people, action):
    routed(people["submitter"])
    response = client_for("compliance").get("/audit/", {"action": action})
    assert response.status_code == 400
    page = Page(response)
    assert page.by_id("action_error") is not None
    assert "No events." in page.html, "nothing is listed as if the filter had applied"


def test_audit_log_filter_by_action(client_for, routed, people):
    routed(people["submitter"])
    routed(people["submitter"])
    response = client_for("compliance").get("/audit/", {"action": " draft.routed "})
    assert response.status_code == 200
    actions = {n.text for n in Page(response).all("code")}
    assert actions == {"draft.routed"}
    assert len(Page(response).all("code")) == 2


def test_failed_login_is_4xx_with_a_message(client, db):
    for post in ({"username": "nobody", "password": "wrong"}, {"username": "\x00", "password": ["a", "b"]}, {}):
        response = client.post("/accounts/login/", post)
        assert 400 <= response.status_code < 500, post
        assert Page(response).all("p", class_="error")


@pytest.mark.parametrize("query", [
    "since=0001-01-01T00:00:00%2B01:00",  # valid, but before year 1 in UTC
    "until=9999-12-31T23:59:59-01:00",  # valid, but after year 9999 in UTC
])
@pytest.mark.parametrize("path", ["/audit/?", "/audit/export/?format=csv&", "/audit/export/manifest/?format=jsonl&"])
def test_audit_times_with_no_utc_equivalent_are_400(client_for, routed, people, path, query):
    """Found by tests/views/test_fuzz.py: these were a 500 (OverflowError spelling them in UTC)."""
    routed(people["submitter"])
    events = AuditEvent.objects.count()
    response = client_for("compliance").get(path + query)
    assert response.status_code == 400
    if path == "/audit/?":
        assert "between the years 1 and 9999" in Page(response).html
    assert AuditEvent.objects.count() == events, "no export was recorded"
