"""Eval pages: who may see them, bad input (4xx with the reason, nothing half-saved), the
one-click case from a decided review, and a run's page as htmx polls it."""
from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from evals import services
from evals.models import Case, CaseResult, EvalRun
from tests.conftest import CUSTOMER_REPLY_INPUT
from workflows import services as workflow_services
from workflows.models import ReviewTask

GOOD = "\n".join(json.dumps({"id": f"c{i}", "input": CUSTOMER_REPLY_INPUT, "expect": {"lane": "blocking_review"}})
                 for i in range(3))


def upload(text, name="cases.jsonl"):
    return SimpleUploadedFile(name, text.encode() if isinstance(text, str) else text)


@pytest.fixture
def dataset(demo):
    data = services.dataset_for(demo.workflows["customer-reply"])
    services.cases_import(dataset=data, text=GOOD)
    return data


@pytest.fixture
def run(demo, dataset):
    run = EvalRun.objects.create(version=demo.version("customer-reply"), dataset=dataset, total=3)
    for case in dataset.cases.all():
        services.eval_case_done(run=run, case=case, outcome=_outcome(), failures=[] if case.key != "c1" else ["lane: x"])
    return run


def _outcome():
    from decimal import Decimal

    from evals.expectations import Outcome

    return Outcome(content='{"reply": "x", "tone": "neutral"}', parsed={"reply": "x", "tone": "neutral"},
                   schema_valid=True, lane="blocking_review", score=0.3, findings=(), cost_usd=Decimal("0.001"), latency_ms=120)


@pytest.mark.parametrize("who", ["submitter", "reviewer_a", "compliance", None])
def test_eval_pages_are_for_workflow_admins_only(client_for, who, dataset, run):
    client = client_for(who)
    for url in ["/evals/", "/evals/customer-reply/", "/evals/customer-reply/datasets/default/",
                "/evals/customer-reply/datasets/default/cases.jsonl", f"/evals/runs/{run.pk}/",
                f"/evals/runs/{run.pk}/compare/{run.pk}/"]:
        response = client.get(url)
        assert response.status_code == (302 if who is None else 404), url
    assert client.post("/evals/customer-reply/run/", {"version": 1, "dataset": "default"}).status_code in (302, 404)
    assert EvalRun.objects.count() == 1


def test_admin_pages_render_and_unknown_objects_are_404(client_for, dataset, run):
    client = client_for("wfadmin")
    assert "Customer reply" in client.get("/evals/").content.decode()
    page = client.get("/evals/customer-reply/").content.decode()
    assert "default" in page and f"/evals/runs/{run.pk}/" in page
    cases = client.get("/evals/customer-reply/datasets/default/").content.decode()
    assert "c0" in cases and "imported from JSON Lines" in cases
    exported = b"".join(client.get("/evals/customer-reply/datasets/default/cases.jsonl").streaming_content).decode()
    assert [json.loads(line)["id"] for line in exported.splitlines()] == ["c0", "c1", "c2"]
    for url in ["/evals/nope/", "/evals/customer-reply/datasets/nope/", "/evals/runs/999999/"]:
        assert client.get(url).status_code == 404


def test_a_run_page_shows_the_summary_failures_first_and_polls_only_while_running(client_for, run):
    client = client_for("wfadmin")
    html = client.get(f"/evals/runs/{run.pk}/").content.decode()
    assert "Done: 3 cases" in html and "hx-trigger" not in html
    assert html.index(">c1<") < html.index(">c0<")  # the failure first
    assert "lane: x" in html and "67%" in html
    EvalRun.objects.filter(pk=run.pk).update(state="running", completed=2)
    partial = client.get(f"/evals/runs/{run.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert partial.lstrip().startswith('<section class="card" id="progress"') and 'hx-trigger="every 1s"' in partial
    assert 'value="2"' in partial and "<html" not in partial
    # The poll that sees the end reloads the page once, for the whole table of cases.
    EvalRun.objects.filter(pk=run.pk).update(state="done", completed=3)
    assert client.get(f"/evals/runs/{run.pk}/", HTTP_HX_REQUEST="true")["HX-Refresh"] == "true"


def test_import_refuses_a_bad_file_whole_and_says_where(client_for, dataset):
    client = client_for("wfadmin")
    bad = GOOD + "\n{oops\n" + json.dumps({"id": "c9", "input": {}, "expect": {"lane": "sideways"}})
    response = client.post("/evals/customer-reply/import/", {"dataset": "default", "file": upload(bad)})
    html = response.content.decode()
    assert response.status_code == 400 and "line 4: not JSON" in html and "line 5.expect.lane" in html
    assert dataset.cases.count() == 3
    assert client.post("/evals/customer-reply/import/", {"dataset": "default", "file": upload(b"\xff\xfe")}).status_code == 400
    assert client.post("/evals/customer-reply/import/", {"dataset": "Not a slug!", "file": upload(GOOD)}).status_code == 400
    response = client.post("/evals/customer-reply/import/", {"dataset": "second", "file": upload(GOOD)})
    assert response.status_code == 302 and Case.objects.filter(dataset__name="second").count() == 3


def test_starting_a_run_from_the_page(client_for, dataset, django_capture_on_commit_callbacks):
    client = client_for("wfadmin")
    assert client.post("/evals/customer-reply/run/", {"version": 99, "dataset": "default"}).status_code == 400
    assert client.post("/evals/customer-reply/run/", {"version": 1, "dataset": "nope"}).status_code == 400
    assert client.get("/evals/customer-reply/run/").status_code == 405
    with django_capture_on_commit_callbacks() as sent:
        response = client.post("/evals/customer-reply/run/", {"version": 1, "dataset": "default"})
    run = EvalRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/evals/runs/{run.pk}/"
    assert (run.total, run.state, len(sent)) == (3, "running", 3)  # one task per case, on commit


def test_one_click_case_from_a_decided_review(client_for, people, routed):
    submission = routed(people["submitter"])
    task = ReviewTask.objects.get(submission=submission)
    reviewer = people["reviewer_a"]
    # Not decided yet: the button is not offered, and a forged POST is refused with a message.
    page = client_for("reviewer_a").get(f"/review/{task.pk}/").content.decode()
    assert "add-eval-case" not in page
    client_for("reviewer_a").post(f"/evals/from-review/{task.pk}/")
    assert not Case.objects.exists()
    workflow_services.review_claim(task_id=task.pk, user=reviewer)
    workflow_services.review_reject(task_id=task.pk, user=reviewer, reason_code="tone", reason_text="Too cold.")
    page = client_for("reviewer_a").get(f"/review/{task.pk}/").content.decode()
    assert 'id="add-eval-case"' in page and "must not auto-approve" in page
    response = client_for("reviewer_a").post(f"/evals/from-review/{task.pk}/", follow=True)
    assert "as submission-" in response.content.decode()
    case = Case.objects.get()
    assert case.expect["must_not_auto_approve"] and case.created_by == reviewer
    # Another workflow's reviewer: not theirs to see (404), nothing added.
    assert client_for("reviewer_b").post(f"/evals/from-review/{task.pk}/").status_code == 404
    assert client_for("wfadmin").post(f"/evals/from-review/{task.pk}/").status_code == 404
    assert Case.objects.count() == 1
    assert CaseResult.objects.count() == 0
