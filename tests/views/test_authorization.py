"""Who may open what: every routed view, for every kind of user.

The table is written out by hand on purpose. `test_every_url_is_in_the_matrix` fails as soon
as a view is added to the URLconf without a row here.

Statuses for requests that carry no valid form data are what an honest client would get:
422 for an invalid form the user may see, 409 for a decision without a claim (checked
before the form, so the message is one the page can show), 404 for
anything outside the user's scope, and LOGIN for "redirected to the login page".
"""
from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from costs.models import AlertMetric, AlertRule
from evals import services as evals
from evals.models import EvalRun
from workflows import services
from workflows.models import AuditEvent, ReviewState, ReviewTask, Submission, SubmissionState

LOGIN = "login"
ACTORS = ("anon", "submitter", "other_submitter", "reviewer_a", "reviewer_b", "dual", "compliance", "wfadmin")

# Objects (created in `world`):
#   sub_a / task_a       customer-reply by `submitter`, blocking review (group A = support-reviewers)
#   sub_b / task_b       underwriting-memo by `submitter`, blocking review (group B = underwriting-reviewers)
#   sub_dual / task_dual customer-reply by `dual` (who also reviews group A)
MATRIX = [
    # url name,             method, path,                                   anon   sub  sub2 revA revB dual comp admin
    ("home",                "GET",  "/",                                    (LOGIN, 200, 200, 200, 200, 200, 200, 200)),
    ("healthz",             "GET",  "/healthz",                             (200,   200, 200, 200, 200, 200, 200, 200)),
    ("readyz",              "GET",  "/readyz",                              (200,   200, 200, 200, 200, 200, 200, 200)),
    # Production settings without REVIEWDESK_METRICS_TOKEN: off for everyone, a session included.
    ("metrics",             "GET",  "/metrics",                             (404,   404, 404, 404, 404, 404, 404, 404)),
    ("login",               "GET",  "/accounts/login/",                     (200,   200, 200, 200, 200, 200, 200, 200)),
    ("logout",              "POST", "/accounts/logout/",                    (302,   302, 302, 302, 302, 302, 302, 302)),
    ("submission_new",      "GET",  "/workflows/customer-reply/new/",       (LOGIN, 200, 200, 404, 404, 200, 404, 404)),
    ("submission_new",      "POST", "/workflows/customer-reply/new/",       (LOGIN, 422, 422, 404, 404, 422, 404, 404)),
    ("submission_new_step", "GET",  "/workflows/customer-reply/new/2/",     (LOGIN, 200, 200, 404, 404, 200, 404, 404)),
    ("submission_new_step", "POST", "/workflows/customer-reply/new/2/",     (LOGIN, 422, 422, 404, 404, 422, 404, 404)),
    ("submission_new_step", "GET",  "/workflows/underwriting-memo/new/3/",  (LOGIN, 200, 200, 404, 404, 200, 404, 404)),
    ("submission_list",     "GET",  "/submissions/",                        (LOGIN, 200, 200, 200, 200, 200, 200, 200)),
    ("submission_detail",   "GET",  "/submissions/{sub_a}/",                (LOGIN, 200, 404, 200, 404, 200, 200, 404)),
    ("submission_detail",   "GET",  "/submissions/{sub_b}/",                (LOGIN, 200, 404, 404, 200, 404, 200, 404)),
    ("submission_detail",   "GET",  "/submissions/{sub_dual}/",             (LOGIN, 404, 404, 200, 404, 200, 200, 404)),
    ("review_queue",        "GET",  "/review/",                             (LOGIN, 404, 404, 200, 200, 200, 404, 404)),
    ("review_detail",       "GET",  "/review/{task_a}/",                    (LOGIN, 404, 404, 200, 404, 200, 404, 404)),
    ("review_detail",       "GET",  "/review/{task_b}/",                    (LOGIN, 404, 404, 404, 200, 404, 404, 404)),
    ("review_detail",       "GET",  "/review/{task_dual}/",                 (LOGIN, 404, 404, 200, 404, 404, 404, 404)),
    ("review_claim",        "POST", "/review/{task_a}/claim/",              (LOGIN, 404, 404, 302, 404, 302, 404, 404)),
    ("review_claim",        "POST", "/review/{task_b}/claim/",              (LOGIN, 404, 404, 404, 302, 404, 404, 404)),
    ("review_claim",        "POST", "/review/{task_dual}/claim/",           (LOGIN, 404, 404, 302, 404, 404, 404, 404)),
    ("review_release",      "POST", "/review/{task_a}/release/",            (LOGIN, 404, 404, 409, 404, 409, 404, 404)),
    ("review_release",      "POST", "/review/{task_b}/release/",            (LOGIN, 404, 404, 404, 409, 404, 404, 404)),
    ("review_release",      "POST", "/review/{task_dual}/release/",         (LOGIN, 404, 404, 409, 404, 404, 404, 404)),
    ("review_approve",      "POST", "/review/{task_a}/approve/",            (LOGIN, 404, 404, 409, 404, 409, 404, 404)),
    ("review_approve",      "POST", "/review/{task_b}/approve/",            (LOGIN, 404, 404, 404, 409, 404, 404, 404)),
    ("review_approve",      "POST", "/review/{task_dual}/approve/",         (LOGIN, 404, 404, 409, 404, 404, 404, 404)),
    ("review_reject",       "POST", "/review/{task_a}/reject/",             (LOGIN, 404, 404, 409, 404, 409, 404, 404)),
    ("review_reject",       "POST", "/review/{task_b}/reject/",             (LOGIN, 404, 404, 404, 409, 404, 404, 404)),
    ("review_reject",       "POST", "/review/{task_dual}/reject/",          (LOGIN, 404, 404, 409, 404, 404, 404, 404)),
    ("review_regenerate",   "POST", "/review/{task_a}/regenerate/",         (LOGIN, 404, 404, 409, 404, 409, 404, 404)),
    ("review_regenerate",   "POST", "/review/{task_b}/regenerate/",         (LOGIN, 404, 404, 404, 409, 404, 404, 404)),
    ("review_regenerate",   "POST", "/review/{task_dual}/regenerate/",      (LOGIN, 404, 404, 409, 404, 404, 404, 404)),
    ("submission_evidence", "GET",  "/submissions/{sub_a}/evidence/",       (LOGIN, 200, 404, 200, 404, 200, 200, 404)),
    ("submission_evidence", "GET",  "/submissions/{sub_b}/evidence/",       (LOGIN, 200, 404, 404, 200, 404, 200, 404)),
    ("submission_evidence", "GET",  "/submissions/{sub_dual}/evidence/",    (LOGIN, 404, 404, 200, 404, 200, 200, 404)),
    ("submission_evidence_json", "GET", "/submissions/{sub_a}/evidence.json", (LOGIN, 200, 404, 200, 404, 200, 200, 404)),
    ("submission_evidence_json", "GET", "/submissions/{sub_dual}/evidence.json", (LOGIN, 404, 404, 200, 404, 200, 200, 404)),
    ("submission_retry",    "POST", "/submissions/{sub_a}/retry/",          (LOGIN, 409, 404, 409, 404, 409, 409, 404)),
    ("submission_retry",    "POST", "/submissions/{sub_fail}/retry/",       (LOGIN, 302, 404, 302, 404, 302, 409, 404)),
    ("audit_log",           "GET",  "/audit/",                              (LOGIN, 404, 404, 404, 404, 404, 200, 404)),
    ("audit_export",        "GET",  "/audit/export/?format=csv",            (LOGIN, 404, 404, 404, 404, 404, 200, 404)),
    ("audit_export",        "GET",  "/audit/export/?format=pdf",            (LOGIN, 404, 404, 404, 404, 404, 400, 404)),
    ("audit_export_manifest", "GET", "/audit/export/manifest/?format=jsonl", (LOGIN, 404, 404, 404, 404, 404, 200, 404)),
    # Calibration (workflow admins act, compliance reads) and evals (workflow admins).
    ("calibration_index",   "GET",  "/calibration/",                        (LOGIN, 404, 404, 404, 404, 404, 200, 200)),
    ("calibration_page",    "GET",  "/calibration/customer-reply/",         (LOGIN, 404, 404, 404, 404, 404, 200, 200)),
    ("calibration_csv",     "GET",  "/calibration/customer-reply/curve.csv", (LOGIN, 404, 404, 404, 404, 404, 200, 200)),
    ("calibration_apply",   "POST", "/calibration/customer-reply/apply/",   (LOGIN, 404, 404, 404, 404, 404, 404, 302)),
    ("automation_stop",     "POST", "/calibration/customer-reply/stop/",    (LOGIN, 404, 404, 404, 404, 404, 404, 302)),
    ("automation_resume",   "POST", "/calibration/customer-reply/resume/",  (LOGIN, 404, 404, 404, 404, 404, 404, 302)),
    ("eval_index",          "GET",  "/evals/",                              (LOGIN, 404, 404, 404, 404, 404, 404, 200)),
    ("eval_workflow",       "GET",  "/evals/customer-reply/",               (LOGIN, 404, 404, 404, 404, 404, 404, 200)),
    ("eval_run_create",     "POST", "/evals/customer-reply/run/",           (LOGIN, 404, 404, 404, 404, 404, 404, 400)),
    ("eval_import",         "POST", "/evals/customer-reply/import/",        (LOGIN, 404, 404, 404, 404, 404, 404, 400)),
    ("eval_dataset",        "GET",  "/evals/customer-reply/datasets/default/", (LOGIN, 404, 404, 404, 404, 404, 404, 200)),
    ("eval_dataset_export", "GET",  "/evals/customer-reply/datasets/default/cases.jsonl", (LOGIN, 404, 404, 404, 404, 404, 404, 200)),
    ("eval_measure_judge",  "POST", "/evals/customer-reply/datasets/default/judge/", (LOGIN, 404, 404, 404, 404, 404, 404, 302)),
    ("eval_run",            "GET",  "/evals/runs/{run}/",                   (LOGIN, 404, 404, 404, 404, 404, 404, 200)),
    ("eval_compare",        "GET",  "/evals/runs/{run}/compare/{run}/",     (LOGIN, 404, 404, 404, 404, 404, 404, 200)),
    ("eval_case_from_review", "POST", "/evals/from-review/{task_a}/",      (LOGIN, 404, 404, 302, 404, 302, 404, 404)),
    ("eval_case_from_review", "POST", "/evals/from-review/{task_b}/",      (LOGIN, 404, 404, 404, 302, 404, 404, 404)),
    ("eval_versions",       "GET",  "/evals/customer-reply/versions/",      (LOGIN, 404, 404, 404, 404, 404, 404, 200)),
    ("eval_version_editor", "GET",  "/evals/customer-reply/versions/edit/", (LOGIN, 404, 404, 404, 404, 404, 404, 200)),
    ("eval_version_editor", "POST", "/evals/customer-reply/versions/edit/", (LOGIN, 404, 404, 404, 404, 404, 404, 400)),
    ("eval_version_check",  "POST", "/evals/customer-reply/versions/check/", (LOGIN, 404, 404, 404, 404, 404, 404, 200)),
    ("eval_version_publish", "POST", "/evals/customer-reply/versions/1/publish/", (LOGIN, 404, 404, 404, 404, 404, 404, 302)),
    ("eval_version_rollback", "POST", "/evals/customer-reply/versions/1/rollback/", (LOGIN, 404, 404, 404, 404, 404, 404, 302)),
    ("eval_version_dry_run", "POST", "/evals/customer-reply/versions/1/dry-run/", (LOGIN, 404, 404, 404, 404, 404, 404, 302)),
    # Costs (issue 9): workflow admins and compliance read; only workflow admins change budgets and rules.
    ("costs_overview",      "GET",  "/costs/?days=7",                       (LOGIN, 404, 404, 404, 404, 404, 200, 200)),
    ("costs_latency",       "GET",  "/costs/latency/",                      (LOGIN, 404, 404, 404, 404, 404, 200, 200)),
    ("costs_reviewers",     "GET",  "/costs/reviewers/",                    (LOGIN, 404, 404, 404, 404, 404, 200, 200)),
    ("costs_csv",           "GET",  "/costs/csv/cost-by-day.csv",           (LOGIN, 404, 404, 404, 404, 404, 200, 200)),
    ("costs_csv",           "GET",  "/costs/csv/no-such-table.csv",         (LOGIN, 404, 404, 404, 404, 404, 404, 404)),
    ("costs_budgets",       "GET",  "/costs/budgets/",                      (LOGIN, 404, 404, 404, 404, 404, 200, 200)),
    ("costs_budget_edit",   "GET",  "/costs/budgets/customer-reply/",       (LOGIN, 404, 404, 404, 404, 404, 404, 200)),
    ("costs_budget_edit",   "POST", "/costs/budgets/customer-reply/",       (LOGIN, 404, 404, 404, 404, 404, 404, 422)),
    ("costs_budget_edit",   "GET",  "/costs/budgets/no-such-workflow/",     (LOGIN, 404, 404, 404, 404, 404, 404, 404)),
    ("costs_alert_new",     "GET",  "/costs/alerts/new/",                   (LOGIN, 404, 404, 404, 404, 404, 404, 200)),
    ("costs_alert_new",     "POST", "/costs/alerts/new/",                   (LOGIN, 404, 404, 404, 404, 404, 404, 422)),
    ("costs_alert_edit",    "GET",  "/costs/alerts/{rule}/",                (LOGIN, 404, 404, 404, 404, 404, 404, 200)),
    ("costs_alert_delete",  "POST", "/costs/alerts/{rule}/delete/",         (LOGIN, 404, 404, 404, 404, 404, 404, 302)),
    ("audit_export_jobs",   "GET",  "/audit/export/jobs/",                  (LOGIN, 404, 404, 404, 404, 404, 302, 404)),
    ("audit_export_jobs",   "POST", "/audit/export/jobs/",                  (LOGIN, 404, 404, 404, 404, 404, 400, 404)),
    # No such job (jobs are scoped to the officer who asked: tests/integration/test_audit_export_jobs.py).
    ("audit_export_job_file", "GET", "/audit/export/jobs/999999/file/",     (LOGIN, 404, 404, 404, 404, 404, 404, 404)),
    ("audit_export_job_manifest", "GET", "/audit/export/jobs/999999/manifest/", (LOGIN, 404, 404, 404, 404, 404, 404, 404)),
]
# Names deliberately outside this matrix: the Django admin is not part of normal operation.
NOT_IN_MATRIX = {"admin"}


@pytest.fixture
def world(people, routed):
    sub_a = routed(people["submitter"])
    sub_b = routed(people["submitter"], slug="underwriting-memo")
    sub_dual = routed(people["dual"])
    sub_fail = services.submission_create(version=sub_a.workflow_version, user=people["submitter"], data=sub_a.data)
    services.generation_claim(submission_id=sub_fail.pk)
    services.generation_fail(submission_id=sub_fail.pk, attempt=1, kind="provider_unavailable", reason="503")
    task = lambda s: ReviewTask.objects.get(submission=s).pk  # noqa: E731
    dataset = evals.dataset_for(sub_a.workflow_version.workflow)
    evals.cases_import(dataset=dataset, text=json.dumps({"id": "one", "input": sub_a.data, "expect": {}}))
    run = EvalRun.objects.create(version=sub_a.workflow_version, dataset=dataset, total=1)
    rule = AlertRule.objects.create(workflow=sub_a.workflow_version.workflow, metric=AlertMetric.QUEUE_AGE, threshold=30)
    return {
        "run": run.pk, "rule": rule.pk,
        "sub_a": sub_a.pk, "sub_b": sub_b.pk, "sub_dual": sub_dual.pk, "sub_fail": sub_fail.pk,
        "task_a": task(sub_a), "task_b": task(sub_b), "task_dual": task(sub_dual),
    }


def _snapshot():
    """The state a refused request must leave untouched. A refusal writes one `auth.denied`
    event (counted apart, see _denials) and nothing else."""
    return (
        sorted(Submission.objects.values_list("pk", "state", "released_at", "final_output")),
        sorted(ReviewTask.objects.values_list("pk", "state", "claimed_by", "decision")),
        AuditEvent.objects.exclude(action="auth.denied").count(),
    )


def _denials():
    return list(AuditEvent.objects.filter(action="auth.denied").order_by("id"))


def _request(client, method, path):
    return client.get(path) if method == "GET" else client.post(path, {})


@pytest.mark.parametrize("name, method, path, expected", MATRIX, ids=[f"{m} {p}" for _, m, p, _ in MATRIX])
def test_permission_matrix(name, method, path, expected, world, client_for, settings):
    # Every refusal below must leave its event: no rate limit gets in the way here
    # (tests/views/test_denials.py tests the limit).
    settings.REVIEWDESK_DENIED_EVENTS_PER_MINUTE = 10_000
    path = path.format(**world)
    wanted = dict(zip(ACTORS, expected, strict=True))
    got = {}
    for actor in ACTORS:
        client = client_for(None if actor == "anon" else actor)
        before, denials_before = _snapshot(), len(_denials())
        # Each actor starts from the same data: a successful claim must not change what the
        # next actor sees. The savepoint is rolled back after every request.
        with transaction.atomic():
            response = _request(client, method, path)
            after, new_denials = _snapshot(), _denials()[denials_before:]
            transaction.set_rollback(True)
        if response.status_code == 302 and wanted[actor] == LOGIN:
            assert response["Location"] == f"/accounts/login/?next={quote(path)}", actor
            got[actor] = LOGIN
        else:
            got[actor] = response.status_code
        if response.status_code >= 400:
            assert after == before, f"{actor}: a refused {method} {path} changed data"
        # A 404 to a signed-in user is a refusal (role page or object outside scope): exactly
        # one auth.denied event, naming that user and this path. Nothing else writes one.
        if response.status_code == 404 and actor != "anon":
            assert len(new_denials) == 1, f"{actor}: {method} {path} refused without an auth.denied event"
            event = new_denials[0]
            assert str(event.actor_id) == client.session["_auth_user_id"] and event.payload["path"] == path.split("?")[0]
        else:
            assert new_denials == [], f"{actor}: {method} {path} ({response.status_code}) wrote auth.denied"
    assert got == wanted


def _names(patterns, namespace=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace:
                yield pattern.namespace
            else:
                yield from _names(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            yield pattern.name


def test_every_url_is_in_the_matrix():
    routed_names = set(_names(get_resolver().url_patterns))
    covered = {name for name, *_ in MATRIX}
    assert routed_names - NOT_IN_MATRIX - covered == set(), "add a row to MATRIX for each new view"
    assert covered - routed_names == set(), "MATRIX names a view that is no longer routed"


def test_submitter_sees_only_own_submissions_in_the_list(people, routed, client_for):
    mine = routed(people["submitter"])
    theirs = routed(people["other_submitter"])
    body = client_for("other_submitter").get("/submissions/").content.decode()
    assert f'href="/submissions/{theirs.pk}/"' in body
    assert f'href="/submissions/{mine.pk}/"' not in body


def test_reviewer_of_group_a_does_not_list_group_b_submissions(people, routed, client_for):
    in_a = routed(people["submitter"])
    in_b = routed(people["submitter"], slug="underwriting-memo")
    body = client_for("reviewer_a").get("/submissions/").content.decode()
    assert f'href="/submissions/{in_a.pk}/"' in body
    assert f'href="/submissions/{in_b.pk}/"' not in body
    queue = client_for("reviewer_a").get("/review/").content.decode()
    task_a, task_b = (ReviewTask.objects.get(submission=s).pk for s in (in_a, in_b))
    assert f'href="/review/{task_a}/"' in queue
    assert f'href="/review/{task_b}/"' not in queue


def test_four_eyes_own_submission_is_not_in_the_queue(people, routed, client_for):
    own = routed(people["dual"])
    someone_elses = routed(people["submitter"])
    own_task = ReviewTask.objects.get(submission=own)
    other_task = ReviewTask.objects.get(submission=someone_elses)
    client = client_for("dual")
    queue = client.get("/review/?lane=blocking_review")
    assert queue.status_code == 200
    body = queue.content.decode()
    assert f'href="/review/{other_task.pk}/"' in body
    assert f'href="/review/{own_task.pk}/"' not in body
    # The count is of reviews this user may do, so their own is not counted either.
    assert '<span class="count" data-lane="blocking_review">1</span>' in body
    assert client.get(f"/review/{own_task.pk}/").status_code == 404
    assert client.post(f"/review/{own_task.pk}/claim/").status_code == 404
    own_task.refresh_from_db()
    assert own_task.claimed_by is None and own_task.state == ReviewState.OPEN
    own.refresh_from_db()
    assert own.state == SubmissionState.ROUTED


POST_ROWS = [(name, path) for name, method, path, _ in MATRIX if method == "POST" and name != "logout"]


@pytest.mark.parametrize("name, path", POST_ROWS, ids=[p for _, p in POST_ROWS])
def test_posts_without_a_csrf_token_are_refused(name, path, world, people):
    path = path.format(**world)
    who = "submitter" if name.startswith("submission") else ("reviewer_b" if "task_b" in path else "reviewer_a")
    client = Client(enforce_csrf_checks=True)
    client.force_login(people[who])
    before = _snapshot()
    assert client.post(path, {}).status_code == 403
    assert _snapshot() == before


def test_pages_carry_the_csrf_token_for_htmx(client_for):
    response = client_for("submitter").get("/")
    token = response.context["csrf_token"]
    assert f'hx-headers=\'{{"X-CSRFToken": "{token}"}}\'' in response.content.decode()
