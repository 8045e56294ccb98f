"""The review queue (issue 8, part 1): tabs and filters, priority, keyset pages, capped live
counts, Next in one statement, the lease heartbeat, two approvals and bulk confirm. Real
PostgreSQL through the services and the views, as a reviewer uses them."""
from __future__ import annotations

import json
import re
from datetime import timedelta
from html import unescape

import pytest
import yaml
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from workflows import selectors, services
from workflows.definitions import DefinitionError, parse_definition
from workflows.models import AuditEvent, DomainError, ReviewApproval, ReviewTask, Submission
from workflows.queue import PRIORITY_RANK, effective_priority

from .conftest import DEFAULT_INPUT
from .html import Page

DEMO = "workflows/demo_workflows/customer-reply.yaml"


def _definition(**routing):
    definition = yaml.safe_load(open(DEMO).read())
    definition["routing"].update(routing)
    return definition


@pytest.fixture
def customer_reply_with(demo):
    """Publish customer-reply again with routing keys changed: routed() then uses that version."""

    def publish(**routing):
        version, created = services.workflow_publish(spec=parse_definition(_definition(**routing)))
        assert created
        return version

    return publish


def _row(page, pk) -> tuple[str, list[str]]:
    """The text and the link texts of one queue row."""
    (html,) = re.findall(rf'<tr data-task="{pk}"[^>]*>(.*?)</tr>', page.html, re.S)
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    return text, [re.sub(r"<[^>]+>", "", a).strip() for a in re.findall(r"<a\b[^>]*>(.*?)</a>", html, re.S)]


def _task(submission) -> ReviewTask:
    return ReviewTask.objects.get(submission=submission)


# --- priority ------------------------------------------------------------------------------


def test_priority_rules_are_validated_against_the_form():
    with pytest.raises(DefinitionError) as err:
        parse_definition(_definition(priority_rules=[{"field": "order_total", "gte": 1000, "priority": "high"}]))
    assert err.value.errors == [("routing.priority_rules[0].field", "'order_total' names no form field")]
    with pytest.raises(DefinitionError) as err:
        parse_definition(_definition(priority_rules=[{"field": "order_value", "gte": 1, "lte": 5, "priority": "high"}]))
    assert "exactly one of gte, gt, lte, lt, equals, in" in str(err.value)
    with pytest.raises(DefinitionError) as err:
        parse_definition(_definition(priority="asap"))
    assert err.value.errors[0][0] == "routing.priority"
    with pytest.raises(DefinitionError):
        parse_definition(_definition(two_approvals="maybe"))


def test_a_rule_raises_the_workflow_priority_and_never_lowers_it():
    spec = parse_definition(_definition(priority="low", priority_rules=[
        {"field": "order_value", "gte": 1000, "priority": "high"},
        {"field": "channel", "in": ["chat"], "priority": "normal"},
        {"field": "order_value", "lt": 0, "priority": "urgent"},
    ]))
    assert effective_priority(spec, {"order_value": "999.99", "channel": "email"}) == PRIORITY_RANK["low"]
    assert effective_priority(spec, {"order_value": "1000", "channel": "email"}) == PRIORITY_RANK["high"]
    assert effective_priority(spec, {"order_value": "1500", "channel": "chat"}) == PRIORITY_RANK["high"]
    assert effective_priority(spec, {"order_value": "", "channel": "chat"}) == PRIORITY_RANK["normal"]
    assert effective_priority(spec, {"order_value": "abc"}) == PRIORITY_RANK["low"]  # not a number: no rule fires
    high = parse_definition(_definition(priority="high", priority_rules=[{"field": "order_value", "gte": 0, "priority": "low"}]))
    assert effective_priority(high, {"order_value": "5"}) == PRIORITY_RANK["high"]


def test_the_queue_sorts_by_due_time_then_priority(customer_reply_with, people, routed, client_for):
    customer_reply_with(priority_rules=[{"field": "order_value", "gte": 1000, "priority": "high"}])
    small = routed(people["submitter"], data={**DEFAULT_INPUT["customer-reply"], "order_value": "10"})
    big = routed(people["submitter"], data={**DEFAULT_INPUT["customer-reply"], "order_value": "5000"})
    later = routed(people["submitter"])
    assert (_task(small).priority, _task(big).priority) == (0, 1)
    due = timezone.now() + timedelta(minutes=10)
    ReviewTask.objects.filter(submission__in=[small, big]).update(due_at=due)  # the same due time
    ReviewTask.objects.filter(submission=later).update(due_at=due + timedelta(minutes=5))
    overdue = routed(people["submitter"])
    ReviewTask.objects.filter(submission=overdue).update(due_at=timezone.now() - timedelta(minutes=1))
    page = Page(client_for("reviewer_a").get("/review/"))
    order = [int(m) for m in re.findall(r'data-task="(\d+)"', page.html)]
    assert order == [_task(s).pk for s in (overdue, big, small, later)]
    assert page.all("span", class_="priority-high")[0].text == "high"
    # Next takes the same first row.
    assert services.review_claim_next(user=people["reviewer_a"]) == _task(overdue).pk


# --- filters, tabs, counts -----------------------------------------------------------------


def test_filters_by_workflow_age_and_finding(people, routed, client_for):
    plain = routed(people["submitter"])
    flagged = routed(people["submitter"])
    ReviewTask.objects.filter(submission=flagged).update(finding_codes=" guardrail pii_in_output ")
    old = routed(people["submitter"])
    ReviewTask.objects.filter(submission=old).update(created_at=timezone.now() - timedelta(hours=5))
    client = client_for("dual")  # reviews customer-reply only

    def rows(query):
        response = client.get("/review/" + query)
        assert response.status_code == 200
        return {int(m) for m in re.findall(r'data-task="(\d+)"', response.content.decode())}

    every = {_task(s).pk for s in (plain, flagged, old)}
    assert rows("?lane=blocking_review") == every
    assert rows("?finding=guardrail") == {_task(flagged).pk}
    assert rows("?finding=pii_in_output") == {_task(flagged).pk}
    assert rows("?finding=none") == {_task(plain).pk, _task(old).pk}
    assert rows("?finding=any") == {_task(flagged).pk}
    assert rows("?age=4h") == {_task(old).pk}
    assert rows("?age=1d") == set()
    assert rows("?workflow=customer-reply") == every
    page = Page(client.get("/review/?finding=guardrail"))
    assert [b.text for b in page.all("span", class_="finding")] == ["guardrail", "pii_in_output"]


@pytest.mark.parametrize("finding", ["guardrail", "any"])
def test_the_finding_filter_walks_the_open_findings_index(people, routed, client_for, finding):
    """With findings rare, the tab's own index filtered by finding reads most of the tab (~35 ms
    at 100,000 open tasks, 3.9 ms with this index: tests/bench/README.md, stop 16). The page's
    query is explained again with sequential scans off, so that the small test table cannot
    hide a filter the partial index cannot serve (the LIKE alone does not imply its condition)."""
    flagged = routed(people["submitter"])
    ReviewTask.objects.filter(submission=flagged).update(finding_codes=" guardrail pii_in_output ")
    with CaptureQueriesContext(connection) as queries:
        assert client_for("dual").get(f"/review/?finding={finding}").status_code == 200
    (rows,) = [q["sql"] for q in queries if "LIMIT 51" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + rows)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "reviewtask_open_findings" in plan, plan


@pytest.mark.parametrize("query, notice", [
    ("?workflow=underwriting-memo", "You review no workflow “underwriting-memo”"),  # not theirs: no hint it exists
    ("?workflow=%00nope", "You review no workflow"),
    ("?age=3y", "is not an age this queue offers"),
    ("?finding=DROP", "is not a finding"),
    ("?lane=auto_approve", "There is no lane"),
    ("?after=garbage", "That page link is not valid any more"),
])
def test_a_bad_filter_is_ignored_with_a_notice(people, routed, client_for, query, notice):
    task = _task(routed(people["submitter"]))
    for url in ("/review/" + query, "/review/counts/" + query):
        response = client_for("dual").get(url, headers={"HX-Request": "true"})
        assert response.status_code == 200, url
    page = Page(client_for("dual").get("/review/" + query))
    assert notice in " ".join(n.text for n in page.all("p", class_="queue-notice"))
    assert f'data-task="{task.pk}"' in page.html, "the queue is still shown"


def test_the_audit_sample_has_its_own_tab(people, routed, client_for):
    sampled = routed(people["submitter"], lane="auto_approve", sampled=True)
    async_ = routed(people["submitter"], lane="async_review")
    client = client_for("reviewer_a")
    page = Page(client.get("/review/?lane=audit_sample"))
    assert {n.attrs["data-lane"]: n.text for n in page.all("span", class_="count")} == {
        "blocking_review": "0", "async_review": "1", "audit_sample": "1"}
    assert re.findall(r'data-task="(\d+)"', page.html) == [str(_task(sampled).pk)]
    assert re.findall(r'data-task="(\d+)"', client.get("/review/?lane=async_review").content.decode()) == [str(_task(async_).pk)]
    assert services.review_claim_next(user=people["reviewer_a"], lane="audit_sample") == _task(sampled).pk


def test_counts_stop_at_the_cap(people, routed, client_for, monkeypatch):
    for _ in range(4):
        routed(people["submitter"])
    monkeypatch.setattr(selectors, "QUEUE_COUNT_CAP", 3)
    page = Page(client_for("reviewer_a").get("/review/"))
    (count,) = [n for n in page.all("span", class_="count") if n.attrs["data-lane"] == "blocking_review"]
    assert count.text == "3+"
    assert selectors.queue_counts_capped(people["reviewer_a"], selectors.QueueFilters())["blocking_review"] == 4


def test_the_queue_page_costs_the_same_queries_at_any_length(people, routed, client_for):
    client = client_for("reviewer_a")
    for _ in range(3):
        routed(people["submitter"])
    client.get("/review/")  # warm the session and caches

    def queries(url):
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == 200
        return ctx.captured_queries

    few = queries("/review/")
    for _ in range(12):
        routed(people["submitter"])
    many = queries("/review/")
    assert len(many) == len(few), [q["sql"][:120] for q in many]
    sql = " ".join(q["sql"] for q in many)
    assert "OFFSET" not in sql.upper()
    assert '"workflows_draft"."content"' not in sql and '"workflows_submission"."data"' not in sql, "list rows decode no JSON"
    assert '"workflows_draft"."findings"' not in sql


# --- next item, lease ----------------------------------------------------------------------


def test_next_is_one_statement_with_skip_locked_history_and_audit(people, routed):
    first = _task(routed(people["submitter"]))
    reviewer = people["reviewer_a"]
    with CaptureQueriesContext(connection) as ctx:
        taken = services.review_claim_next(user=reviewer)
    task = ReviewTask.objects.get(pk=first.pk)
    assert taken == first.pk and task.claimed_by_id == reviewer.pk and task.lease_expires_at > timezone.now()
    # The pick, the lease, the history row and the audit event: one statement, one round trip.
    writes = [q["sql"] for q in ctx.captured_queries if "UPDATE " in q["sql"].upper() or "INSERT " in q["sql"].upper()]
    assert len(writes) == 1
    claim = writes[0]
    assert "FOR UPDATE OF t SKIP LOCKED" in claim and "RETURNING" in claim
    assert "INSERT INTO workflows_historicalreviewtask" in claim and "INSERT INTO workflows_auditevent" in claim
    # Besides it only the reviewer's role (read once per request) and the transaction (a
    # savepoint inside the test's own): the scope is a subquery of the claim.
    sqls = [q["sql"] for q in ctx.captured_queries]
    others = [sql for sql in sqls if sql != claim and not sql.startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]
    assert len(others) <= 1, others
    # Inside a caller's transaction (this test's) the claim leaves the commit alone: only its own
    # transaction may skip the flush (tests/integration/test_review_next.py).
    assert "set_config('synchronous_commit', COALESCE(NULL, current_setting('synchronous_commit')), true)" in claim
    # The history row is the task as claimed, as save() would have written it.
    row = ReviewTask.history.get(id=first.pk, history_change_reason="claimed")
    assert (row.history_type, row.history_user_id, row.claimed_by_id, row.lease_expires_at, row.lane, row.submission_id,
            row.draft_id, row.due_at) == ("~", reviewer.pk, reviewer.pk, task.lease_expires_at, task.lane,
                                          task.submission_id, task.draft_id, task.due_at)
    # The audit event says what record() would say, and it chains and verifies like any other.
    event = AuditEvent.objects.get(object_type="reviewtask", object_id=str(first.pk), action="review.claimed")
    assert (event.actor_id, event.actor_label, event.workflow_version_id) == (
        reviewer.pk, reviewer.username, task.submission.workflow_version_id)
    assert event.payload == {"submission_id": task.submission_id, "lease_expires_at": task.lease_expires_at.isoformat(),
                             "next": True}
    from workflows import audit

    audit.chain_now()
    event.refresh_from_db()
    assert event.hash and audit.verify_chain().ok


def test_the_heartbeat_renews_only_a_lease_it_holds(people, routed, client_for, settings):
    task = _task(routed(people["submitter"]))
    reviewer = client_for("reviewer_a")
    assert reviewer.post(f"/review/{task.pk}/lease/").status_code == 409  # nothing claimed yet
    services.review_claim(task_id=task.pk, user=people["reviewer_a"])
    soon = timezone.now() + timedelta(minutes=1)
    ReviewTask.objects.filter(pk=task.pk).update(lease_expires_at=soon)
    answer = reviewer.post(f"/review/{task.pk}/lease/")
    assert answer.status_code == 200 and answer.json()["ok"]
    task.refresh_from_db()
    assert task.lease_expires_at >= soon + timedelta(minutes=settings.REVIEWDESK_LEASE_RENEW_MINUTES - 2)
    events = AuditEvent.objects.count()
    # Its lease runs out and someone else claims the item: the heartbeat says so, changes nothing.
    ReviewTask.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    services.review_claim(task_id=task.pk, user=people["dual"])
    refused = reviewer.post(f"/review/{task.pk}/lease/")
    assert refused.status_code == 409 and "dual holds this review now" in refused.json()["error"]
    task.refresh_from_db()
    assert task.claimed_by_id == people["dual"].pk
    assert AuditEvent.objects.count() == events + 1  # dual's claim only


def test_a_decision_after_someone_else_took_the_lease_is_refused_and_keeps_the_edit(people, routed, client_for):
    submission = routed(people["submitter"])
    task = _task(submission)
    reviewer = client_for("reviewer_a")
    reviewer.post(f"/review/{task.pk}/claim/")
    ReviewTask.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    services.review_claim(task_id=task.pk, user=people["dual"])
    edited = json.dumps({"reply": "My careful edit.", "tone": "apologetic"})
    refused = reviewer.post(f"/review/{task.pk}/approve/", {"edited_output": edited})
    assert refused.status_code == 409
    page = Page(refused)
    assert "Claim this review first" in page.html or "expired" in page.html
    assert page.by_id("held-by") is not None and page.by_id("claim") is None, "no claim offered on a held item"
    assert page.by_id("carried-edit-text").text == edited, "the reviewer's words come back"
    task.refresh_from_db()
    submission.refresh_from_db()
    assert task.is_open and task.claimed_by_id == people["dual"].pk and task.decision == ""
    assert submission.final_output != edited


def test_the_queue_shows_who_holds_an_item_and_offers_no_open(people, routed, client_for):
    task = _task(routed(people["submitter"]))
    services.review_claim(task_id=task.pk, user=people["dual"])
    page = Page(client_for("reviewer_a").get("/review/"))
    text, links = _row(page, task.pk)
    assert "Held by dual until" in text and links == ["View"]
    assert services.review_claim_next(user=people["reviewer_a"]) is None


# --- two approvals -------------------------------------------------------------------------


@pytest.fixture
def two_approvals(customer_reply_with, people, routed, make_user):
    customer_reply_with(two_approvals=True)
    third = make_user("reviewer-c", "reviewer", "support-reviewers")
    submission = routed(people["submitter"])
    return submission, _task(submission), third


def test_two_approvals_need_two_distinct_reviewers(two_approvals, people, client_for):
    submission, task, _ = two_approvals
    assert task.approvals_required == 2
    first, second = people["reviewer_a"], people["dual"]
    services.review_claim(task_id=task.pk, user=first)
    services.review_approve(task_id=task.pk, user=first)
    task.refresh_from_db()
    submission.refresh_from_db()
    assert task.is_open and task.approvals_given == 1 and task.claimed_by_id is None
    assert not submission.is_released, "nothing goes out on the first approval"
    assert AuditEvent.objects.filter(object_id=str(task.pk), action="review.approval_recorded").count() == 1
    # The first approver cannot give the second approval, and is not offered it.
    with pytest.raises(DomainError, match="second reviewer"):
        services.review_claim(task_id=task.pk, user=first)
    assert services.review_claim_next(user=first) is None
    text, links = _row(Page(client_for("reviewer_a").get("/review/")), task.pk)
    assert "1 of 2 approvals · yours given" in text and links == ["View"]
    assert Page(client_for("reviewer_a").get(f"/review/{task.pk}/")).by_id("approved-once") is not None
    # The second reviewer releases it.
    assert services.review_claim_next(user=second) == task.pk
    services.review_approve(task_id=task.pk, user=second)
    task.refresh_from_db()
    submission.refresh_from_db()
    assert not task.is_open and task.decided_by_id == second.pk and submission.is_released
    assert set(ReviewApproval.objects.filter(task=task).values_list("reviewer_id", flat=True)) == {first.pk, second.pk}


def test_an_edit_by_the_second_reviewer_needs_another_approval(two_approvals, people):
    submission, task, third = two_approvals
    first, second = people["reviewer_a"], people["dual"]
    edited = json.dumps({"reply": "Edited by the second reviewer.", "tone": "apologetic"})
    services.review_claim(task_id=task.pk, user=first)
    services.review_approve(task_id=task.pk, user=first)
    services.review_claim(task_id=task.pk, user=second)
    services.review_approve(task_id=task.pk, user=second, edited_output=edited)
    task.refresh_from_db()
    assert task.is_open and task.approvals_given == 1 and task.pending_output == edited
    assert ReviewApproval.objects.filter(task=task, superseded=True).count() == 1
    # The first reviewer may approve the edited text (a different reviewer from its approver);
    # the editor shows them the text approved so far, re-indented, which is no change.
    services.review_claim(task_id=task.pk, user=first)
    services.review_approve(task_id=task.pk, user=first, edited_output=json.dumps(json.loads(edited), indent=2))
    task.refresh_from_db()
    submission.refresh_from_db()
    assert not task.is_open and task.decision == "edit" and submission.final_output == edited
    assert third  # (unused here: shows another reviewer was available)


def test_a_reject_by_either_reviewer_closes_it(two_approvals, people):
    submission, task, third = two_approvals
    services.review_claim(task_id=task.pk, user=people["reviewer_a"])
    services.review_approve(task_id=task.pk, user=people["reviewer_a"])
    services.review_claim(task_id=task.pk, user=third)
    services.review_reject(task_id=task.pk, user=third, reason_code="inaccurate", reason_text="Wrong amount.")
    task.refresh_from_db()
    submission.refresh_from_db()
    assert not task.is_open and task.decision == "reject" and submission.state == "rejected"
    assert not submission.is_released


def test_two_approvals_apply_to_the_blocking_lane_only(customer_reply_with, people, routed):
    customer_reply_with(two_approvals=True)
    assert _task(routed(people["submitter"], lane="async_review")).approvals_required == 1


# --- bulk confirm --------------------------------------------------------------------------


def test_bulk_confirm_approves_the_clean_ones_and_names_the_skipped(people, routed, client_for):
    clean = [routed(people["submitter"], lane="async_review") for _ in range(3)]
    flagged = routed(people["submitter"], lane="async_review")
    ReviewTask.objects.filter(submission=flagged).update(finding_codes=" guardrail ")
    held = routed(people["submitter"], lane="async_review")
    services.review_claim(task_id=_task(held).pk, user=people["dual"])
    decided = routed(people["submitter"], lane="async_review")
    services.review_claim(task_id=_task(decided).pk, user=people["dual"])
    services.review_approve(task_id=_task(decided).pk, user=people["dual"])
    ids = [_task(s).pk for s in [*clean, flagged, held]] + [ReviewTask.objects.get(submission=decided).pk]
    client = client_for("reviewer_a")

    queue = Page(client.get("/review/?lane=async_review"))
    boxes = {int(i.attrs["value"]) for i in queue.all("input", name="task")}
    assert boxes == {_task(s).pk for s in clean}, "no checkbox on flagged or held rows"
    step = client.post("/review/bulk-confirm/", {"task": ids})
    assert step.status_code == 200
    page = Page(step)
    assert page.by_id("bulk-question").text == "Confirm 3 released drafts as reviewed?"
    assert ReviewTask.objects.filter(pk__in=ids, state="open").count() == 5, "nothing decided before the confirmation"
    events = AuditEvent.objects.filter(action="review.approved").count()
    done = client.post("/review/bulk-confirm/", {"task": ids, "confirm": "1"}, follow=True)
    text = " ".join(li.text for li in Page(done).all("li", class_="msg"))
    assert "Confirmed 3 released drafts as reviewed" in text
    assert f"#{flagged.pk} (has findings: review it on its own)" in text
    assert f"#{held.pk} (held by dual until" in text
    assert f"#{decided.pk} (already decided or not in your queue)" in text
    assert AuditEvent.objects.filter(action="review.approved").count() == events + 3
    for s in clean:
        t = _task(s)
        assert t.state == "done" and t.decision == "approve" and t.decided_by_id == people["reviewer_a"].pk
        assert AuditEvent.objects.filter(object_id=str(t.pk), action="review.approved", payload__bulk=True).count() == 1
    assert _task(flagged).is_open and _task(held).is_open


def test_bulk_confirm_is_capped_and_needs_a_selection(people, routed, client_for):
    client = client_for("reviewer_a")
    response = client.post("/review/bulk-confirm/", {"task": [str(n) for n in range(1, 60)], "confirm": "1"}, follow=True)
    assert "Confirm at most 50 items at once; you selected 59." in response.content.decode()
    response = client.post("/review/bulk-confirm/", {"task": ["x", "-1"]}, follow=True)
    assert "Select at least one item to confirm." in response.content.decode()
    assert response.status_code == 200


def test_select_all_on_the_page_without_javascript(people, routed, client_for):
    clean = [routed(people["submitter"], lane="async_review") for _ in range(2)]
    client = client_for("reviewer_a")
    queue = Page(client.get("/review/?lane=async_review"))
    page_ids = [i.attrs["value"] for i in queue.all("input", name="page_task")]
    assert sorted(map(int, page_ids)) == sorted(_task(s).pk for s in clean)
    assert "Confirm all 2 without findings on this page" in queue.by_id("bulk-page").text
    step = Page(client.post("/review/bulk-confirm/", {"page_task": page_ids, "all": "1"}))
    assert step.by_id("bulk-question").text == "Confirm 2 released drafts as reviewed?"


def test_a_sampled_item_is_never_bulk_confirmed(people, routed):
    sampled = routed(people["submitter"], lane="auto_approve", sampled=True)
    result = services.review_bulk_confirm(user=people["reviewer_a"], task_ids=[_task(sampled).pk])
    assert result.confirmed == [] and result.skipped == [(f"#{sampled.pk}", "an audit sample: review it on its own")]
    assert Submission.objects.get(pk=sampled.pk).review_tasks.open().count() == 1


def test_the_keyset_pages_walk_every_row_once_in_queue_order(people, routed, client_for, settings):
    settings.REVIEWDESK_PAGE_SIZE = 4
    subs = [routed(people["submitter"]) for _ in range(9)]
    # Mixed: equal due times with different priorities, and undated rows (last).
    ids = [_task(s).pk for s in subs]
    due = timezone.now() + timedelta(minutes=5)
    ReviewTask.objects.filter(pk__in=ids[:4]).update(due_at=due)
    ReviewTask.objects.filter(pk__in=ids[1:3]).update(priority=1)
    ReviewTask.objects.filter(pk__in=ids[6:]).update(due_at=None)
    client = client_for("reviewer_a")
    url, seen = "/review/?lane=blocking_review", []
    while url:
        page = Page(client.get(url))
        seen += [int(m) for m in re.findall(r'data-task="(\d+)"', page.html)]
        nexts = page.all("a", rel="next")
        url = unescape(nexts[0].attrs["href"]) if nexts else None
    expected = list(selectors.queue_tasks(people["reviewer_a"], selectors.QueueFilters()).values_list("pk", flat=True))
    assert seen == expected and sorted(seen) == sorted(ids)
    assert seen[:2] == sorted(ids[1:3]) and set(seen[-3:]) == set(ids[6:])


def test_next_takes_from_the_tab_on_screen_after_an_htmx_switch(people, routed, client_for):
    async_task = _task(routed(people["submitter"], lane="async_review"))
    routed(people["submitter"])  # a blocking one, more urgent by lane default
    client = client_for("reviewer_a")
    partial = client.get("/review/?lane=async_review", headers={"HX-Request": "true"}).content.decode()
    assert partial.lstrip().startswith('<div id="queue"')
    (lane,) = re.findall(r'<form[^>]*id="next-form">.*?name="lane" value="([a-z_]+)"', partial, re.S)
    assert lane == "async_review"
    answer = client.post("/review/next/", {"lane": lane})
    assert answer.status_code == 302 and answer["Location"] == f"/review/{async_task.pk}/"
