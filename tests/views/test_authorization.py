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
import re
from urllib.parse import quote

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve

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
    ("review_next",         "POST", "/review/next/",                        (LOGIN, 404, 404, 302, 302, 302, 404, 404)),
    ("review_queue_counts", "GET",  "/review/counts/",                      (LOGIN, 404, 404, 200, 200, 200, 404, 404)),
    ("review_queue_counts", "GET",  "/review/counts/?lane=x&workflow=y",    (LOGIN, 404, 404, 200, 200, 200, 404, 404)),
    # Nothing selected: back to the queue with a message, nothing confirmed.
    ("review_bulk_confirm", "POST", "/review/bulk-confirm/",                (LOGIN, 404, 404, 302, 302, 302, 404, 404)),
    # No lease held: the heartbeat is refused (409, JSON with the reason).
    ("review_lease",        "POST", "/review/{task_a}/lease/",              (LOGIN, 404, 404, 409, 404, 409, 404, 404)),
    ("review_lease",        "POST", "/review/{task_b}/lease/",              (LOGIN, 404, 404, 404, 409, 404, 404, 404)),
    ("review_lease",        "POST", "/review/{task_dual}/lease/",           (LOGIN, 404, 404, 409, 404, 404, 404, 404)),
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
    # The draft as it is written (issue 8): the detail page's scope; 204 when there is nothing
    # to stream (sub_a is routed), which tells EventSource to stop; the page polls.
    ("submission_stream",   "GET",  "/submissions/{sub_a}/stream/",         (LOGIN, 204, 404, 204, 404, 204, 204, 404)),
    ("submission_stream",   "GET",  "/submissions/{sub_dual}/stream/",      (LOGIN, 404, 404, 204, 404, 204, 204, 404)),
    # A new request prefilled from one's own earlier request only.
    ("submission_new",      "GET",  "/workflows/customer-reply/new/?from={sub_a}", (LOGIN, 302, 404, 404, 404, 404, 404, 404)),
    # (A POST is a wizard step like any other: `from` is read on GET only.)
    ("submission_new",      "POST", "/workflows/customer-reply/new/?from={sub_a}", (LOGIN, 422, 422, 404, 404, 422, 404, 404)),
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
    # One's own e-mail choices (issue 8): everyone signed in, no user id in the path (a POST
    # without boxes turns one's own e-mails off: tests/integration/test_notifications.py).
    ("notification_preferences", "GET", "/account/notifications/",         (LOGIN, 200, 200, 200, 200, 200, 200, 200)),
    ("notification_preferences", "POST", "/account/notifications/",        (LOGIN, 302, 302, 302, 302, 302, 302, 302)),
]
# Names outside this matrix: the Django admin (namespace "admin") is not part of normal
# operation (DESIGN.md section 1: staff is not a role) and has its own staff check, so it gets
# its own, generated table below (ADMIN_*): every admin route sends every role and anonymous to
# a login page. Nothing else may be left out.
NOT_IN_MATRIX = {"admin"}
# Routes that answer without a session: the probes, the log-in pages, and /metrics (a bearer
# token in production, refused as 404 without one: tests/integration/test_metrics.py).
PUBLIC = {"healthz", "readyz", "login", "logout", "metrics"}


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
    assert '<span class="count" data-lane="blocking_review" id="count-blocking_review">1</span>' in body
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


# --- Generated from the URLconf -------------------------------------------------------------


def _routes(patterns=None, prefix="", namespace=None):
    """Every route of the URLconf, recursively through include(): (namespace, name, pattern
    text with the include prefixes, the URLPattern)."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern), pattern.namespace or namespace)
        else:
            yield namespace, pattern.name, prefix + str(pattern.pattern), pattern


def test_every_route_of_the_app_has_a_name():
    """The matrix is keyed by URL name: a route without one could not be listed."""
    unnamed = [text for namespace, name, text, _ in _routes() if namespace is None and not name]
    assert unnamed == []


def test_every_matrix_row_opens_the_view_it_names(world):
    """The table cannot drift from the URLconf: each row's path resolves to the row's name."""
    for name, _method, path, _ in MATRIX:
        assert resolve(path.format(**world).split("?")[0]).url_name == name, path


def test_every_route_is_exercised_by_a_row(world):
    """Not just every name: every route pattern (two patterns may share a name or a view)."""
    exercised = {resolve(path.format(**world).split("?")[0]).route for _, _, path, _ in MATRIX}
    app_routes = {text for namespace, _, text, _ in _routes() if namespace is None}
    assert app_routes - exercised == set()


GET_ROWS = [row for row in MATRIX if row[1] == "GET"]


@pytest.mark.parametrize("name, method, path, expected", GET_ROWS, ids=[p for _, _, p, _ in GET_ROWS])
def test_htmx_partials_answer_like_their_pages(name, method, path, expected, world, client_for, settings):
    """A partial (HX-Request) is the same view: the same refusal for the same people."""
    settings.REVIEWDESK_DENIED_EVENTS_PER_MINUTE = 10_000
    path = path.format(**world)
    for actor, wanted in zip(ACTORS, expected, strict=True):
        response = client_for(None if actor == "anon" else actor).get(path, headers={"HX-Request": "true"})
        got = LOGIN if response.status_code == 302 and response["Location"].startswith("/accounts/login/") else \
            response.status_code
        if got != wanted:
            # Allowed either way is the same answer: a page may give its partial (200) where the
            # full page redirects to where the list is shown (the export jobs, on the audit page).
            assert wanted not in (LOGIN, 404) and got not in (LOGIN, 404), (actor, path, got, wanted)
            assert got < 400 and wanted < 400, (actor, path, got, wanted)


OTHER_METHODS = ("GET", "POST", "PUT", "DELETE")
# One entry per path: the methods the table lists for it and who it refuses with 404.
PATHS: dict[str, tuple[str, set[str], set[str]]] = {}
for _name, _method, _path, _expected in MATRIX:
    _entry = PATHS.setdefault(_path, (_name, set(), set(ACTORS)))
    _entry[1].add(_method)
    _entry[2].intersection_update(a for a, e in zip(ACTORS, _expected, strict=True) if e == 404)


@pytest.mark.parametrize("path", PATHS)
def test_methods_outside_the_table_never_open_a_door(path, world, client_for, settings):
    """Every other HTTP method on each route, by every actor: never a 5xx; anonymous still
    goes to login; someone the table refuses is still refused (404, or a 405 that says nothing
    about the object); and nothing is saved (no method outside the table writes)."""
    settings.REVIEWDESK_DENIED_EVENTS_PER_MINUTE = 10_000
    name, listed, refused = PATHS[path]
    path = path.format(**world)
    before = _snapshot()
    for other in set(OTHER_METHODS) - listed:
        for actor in ACTORS:
            response = client_for(None if actor == "anon" else actor).generic(other, path)
            code = response.status_code
            where = f"{actor}: {other} {path} -> {code}"
            assert code < 500, where
            if actor == "anon" and name not in PUBLIC:
                assert code == 302 and response["Location"].startswith("/accounts/login/"), where
            if actor in refused:
                assert code in (404, 405), where
    assert _snapshot() == before, f"a method outside the table changed data on {path}"


# --- The Django admin -----------------------------------------------------------------------

ADMIN_LOGIN = "/admin/login/"


def _admin_path(text: str, values: dict) -> str:
    """A concrete path for an admin route: converters and named groups filled from real
    objects, unnamed groups with an id, regex anchors dropped."""
    text = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: str(values[m.group(1)]), text)
    text = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), text)
    text = re.sub(r"\([^)]*\)", str(values["object_id"]), text)
    return "/" + text.replace("^", "").replace("$", "")


@pytest.fixture
def admin_paths(world, people):
    """Every admin route, as (name, path), with ids of real rows (a submission, its history)."""
    submission = Submission.objects.get(pk=world["sub_a"])
    values = {
        "object_id": submission.pk, "id": people["submitter"].pk, "app_label": "workflows",
        "content_type_id": ContentType.objects.get_for_model(Submission).pk, "url": "no-such-admin-page/",
    }
    paths = []
    for namespace, name, text, pattern in _routes():
        if namespace != "admin":
            continue
        path = _admin_path(text, values)
        # The path was built right: it reaches this very route.
        assert resolve(path).func == pattern.callback, (text, path)
        paths.append((name or text, path))
    assert len(paths) > 20, "the admin's routes were found"
    return paths


def test_no_role_is_staff(people):
    """The admin table below rests on this: the roles do not make anyone staff."""
    assert not any(u.is_staff or u.is_superuser for u in people.values())


def test_the_admin_is_closed_to_every_role_and_to_anonymous(admin_paths, client_for, settings):
    """Every admin route (generated from the URLconf, so a model registered later is covered),
    GET and POST, by anonymous and by each role: a redirect to a login page, nothing saved.
    Only the admin's own login page answers 200 (its form refuses non-staff accounts)."""
    settings.REVIEWDESK_DENIED_EVENTS_PER_MINUTE = 10_000
    for actor in ACTORS:
        client = client_for(None if actor == "anon" else actor)
        # Nothing is rolled back here: if any of these requests saved anything, the snapshot
        # taken after all of them differs.
        before = _snapshot()
        for name, path in admin_paths:
            for method in ("GET", "POST"):
                response = client.generic(method, path)
                where = f"{actor}: {method} {path} ({name}) -> {response.status_code}"
                if name == "login":
                    assert response.status_code == 200, where
                    continue
                assert response.status_code == 302, where
                location = response["Location"]
                if name == "logout" and actor != "anon":
                    # Django sends a signed-in non-staff user from admin logout to the admin
                    # index, which sends them to the admin login: still no admin page.
                    assert location == "/admin/", where
                    continue
                assert location.startswith((ADMIN_LOGIN + "?next=", "/accounts/login/?next=")), where
        assert _snapshot() == before, f"{actor}: an admin request changed data"


def test_the_admin_login_refuses_a_role_account(people, client):
    """The admin's login form does not let a role account in (it needs is_staff)."""
    people["compliance"].set_password("pw-compliance")
    people["compliance"].save()
    response = client.post(ADMIN_LOGIN, {"username": "compliance", "password": "pw-compliance"})
    assert response.status_code == 200 and b"staff account" in response.content
    assert client.get("/admin/").status_code == 302


def test_a_staff_account_does_get_in(admin_paths, make_user, client):
    """The control for the table above: the same paths are real admin pages for staff."""
    staff = make_user("staff-admin")
    staff.is_staff = staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    opened = {name: client.get(path).status_code for name, path in admin_paths
              if name in ("index", "workflows_submission_changelist", "workflows_submission_change", "app_list")}
    assert opened == {"index": 200, "workflows_submission_changelist": 200, "workflows_submission_change": 200,
                      "app_list": 200}
