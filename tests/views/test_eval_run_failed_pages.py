"""A failed eval run on the eval pages: the reason in plain words, "Run again" only where the
admin can start that run now, the versions page saying the candidate must be run again, and the
htmx poll that sees the failure reloading the page once."""
from __future__ import annotations

import pytest

from evals import services
from evals.models import EvalRun, RunState
from tests.views.html import Page
from tests.views.test_evals_pages import _outcome, dataset, run  # noqa: F401 (fixtures)


def _inside(page: Page, container_id: str, tag: str, **attrs) -> list:
    container = page.by_id(container_id)
    assert container is not None, f"no #{container_id}"
    return [node for node in page.all(tag, **attrs) if container.element in node.ancestors]


REASON = "no case finished, even after the missing cases were sent again 3 times (a worker keeps stopping inside them)"


@pytest.fixture
def failed(demo, dataset):  # noqa: F811
    stopped = EvalRun.objects.create(version=demo.version("customer-reply"), dataset=dataset, total=3)
    services.eval_case_done(run=stopped, case=dataset.cases.get(key="c0"), outcome=_outcome(), failures=[])
    assert services.eval_run_fail(run_id=stopped.pk, reason=REASON)
    stopped.refresh_from_db()
    return stopped


def test_the_run_page_says_why_it_failed_and_offers_to_run_it_again(client_for, failed):
    client = client_for("wfadmin")
    response = client.get(f"/evals/runs/{failed.pk}/")
    assert response.status_code == 200
    page = Page(response)
    html = response.content.decode()
    assert "Failed after 1 of 3 cases" in html and "hx-trigger" not in html  # no polling of a run that ended
    notice = page.by_id("run-failed").text
    assert f"This run failed: {REASON}." in notice
    assert "does not count for publishing" in notice and "the 1 case that finished is listed below" in notice
    form = page.by_id("run-again")
    assert form.attrs["action"] == "/evals/customer-reply/run/" and form.attrs["method"] == "post"
    assert _inside(page, "run-failed", "form", id="run-again")
    fields = {page.by_id(f"run-again-{name}").attrs["name"]: page.by_id(f"run-again-{name}").attrs["value"]
              for name in ("version", "dataset")}
    assert fields == {"version": "1", "dataset": "default"}
    assert _inside(page, "run-again", "button", type="submit")[0].text == "Run again"

    # The button starts the same eval again (a new run, on commit one task per case).
    again = client.post(form.attrs["action"], fields)
    new = EvalRun.objects.exclude(pk=failed.pk).get()
    assert again.status_code == 302 and again["Location"] == f"/evals/runs/{new.pk}/"
    assert (new.state, new.total, new.version_id, new.dataset_id) == (RunState.RUNNING, 3, failed.version_id, failed.dataset_id)


def test_run_again_is_offered_only_when_the_admin_can_start_that_run(client_for, failed, demo, run):  # noqa: F811
    client = client_for("wfadmin")
    # A run that did not fail: nothing to run again.
    assert Page(client.get(f"/evals/runs/{run.pk}/")).by_id("run-again") is None
    # A failed dry run does not record its case: the versions page, where a case is chosen.
    dry = EvalRun.objects.create(version=failed.version, dataset=failed.dataset, total=1, purpose="dry_run")
    services.eval_run_fail(run_id=dry.pk, reason="its worker stopped")
    page = Page(client.get(f"/evals/runs/{dry.pk}/"))
    assert page.by_id("run-again") is None
    assert _inside(page, "dry-run-again", "a", href="/evals/customer-reply/versions/")
    # A dataset emptied since: starting it would be refused ("The dataset has no cases yet.").
    failed.dataset.cases.all().delete()
    page = Page(client.get(f"/evals/runs/{failed.pk}/"))
    assert page.by_id("run-failed") is not None and page.by_id("run-again") is None
    # Nobody but a workflow admin sees the page at all (404, as for every eval page).
    for who in ("reviewer_a", "compliance", "submitter"):
        assert client_for(who).get(f"/evals/runs/{failed.pk}/").status_code == 404


def test_the_poll_that_sees_the_failure_reloads_the_page(client_for, failed):
    EvalRun.objects.filter(pk=failed.pk).update(state=RunState.RUNNING, failure_reason="", finished_at=None)
    client = client_for("wfadmin")
    polled = client.get(f"/evals/runs/{failed.pk}/", HTTP_HX_REQUEST="true")
    assert "HX-Refresh" not in polled and 'hx-trigger="every 1s"' in polled.content.decode()
    services.eval_run_fail(run_id=failed.pk, reason=REASON)
    polled = client.get(f"/evals/runs/{failed.pk}/", HTTP_HX_REQUEST="true")
    assert polled["HX-Refresh"] == "true" and "This run failed" in polled.content.decode()


def test_the_runs_list_and_the_versions_page_say_the_run_failed(client_for, failed, demo):
    client = client_for("wfadmin")
    runs = Page(client.get("/evals/customer-reply/"))
    (link,) = runs.all("a", href=f"/evals/runs/{failed.pk}/")
    row = next(n for n in runs.all("tr") if n.element in link.ancestors)
    assert "Failed" in row.text and REASON[:100] in row.text
    # The versions page shows each version's last finished eval on the gate dataset: the failed
    # one, with what to do (the publish gate refuses it, tests/integration/test_eval_run_failed.py).
    versions = Page(client.get("/evals/customer-reply/versions/"))
    row_id = f"version-{failed.version.number}"
    (link,) = _inside(versions, row_id, "a", href=f"/evals/runs/{failed.pk}/")
    assert link.text == "failed" and f"{REASON[:100]}" in versions.by_id(row_id).text
    assert "run it again" in versions.by_id(row_id).text
