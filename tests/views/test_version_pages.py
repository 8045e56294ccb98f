"""The workflow admin's version pages: the editor checks as you type and previews the form, a
candidate is saved, published through the gate (refused without its eval when a dataset
exists; an override is audited), an earlier version rolled back to; a dry run is one case."""
from __future__ import annotations

import json

import pytest

from evals import services as evals
from evals.models import EvalRun
from tests.conftest import CUSTOMER_REPLY_INPUT
from workflows.models import AuditEvent, Workflow

BASE = "/evals/customer-reply/versions/"


def current_yaml():
    return Workflow.objects.get(slug="customer-reply").current_version.source_yaml


def stricter():
    return current_yaml().replace("auto_approve_at: 0.90", "auto_approve_at: 0.95")


@pytest.mark.parametrize("who", ["submitter", "reviewer_a", "compliance"])
def test_version_pages_are_for_workflow_admins_only(client_for, who):
    client = client_for(who)
    assert client.get(BASE).status_code == 404
    assert client.get(BASE + "edit/").status_code == 404
    for url in ("check/", "1/publish/", "1/rollback/", "1/dry-run/", "edit/"):
        assert client.post(BASE + url, {"source": "x", "reason": "x"}).status_code == 404
    assert Workflow.objects.get(slug="customer-reply").versions.count() == 1


def test_the_editor_checks_as_you_type_and_previews(client_for):
    client = client_for("wfadmin")
    page = client.get(BASE + "edit/").content.decode()
    assert "auto_approve_at: 0.90" in page and "Valid definition" in page and "Customer name" in page
    bad = client.post(BASE + "check/", {"source": current_yaml().replace("type: decimal", "type: money")},
                      HTTP_HX_REQUEST="true").content.decode()
    assert bad.lstrip().startswith('<section class="card" id="check"') and "form.steps[1].fields[1].type" in bad
    assert "1 problem" in bad
    renamed = client.post(BASE + "check/", {"source": current_yaml().replace("slug: customer-reply", "slug: other")},
                          HTTP_HX_REQUEST="true").content.decode()
    assert "must stay &#x27;customer-reply&#x27;" in renamed
    good = client.post(BASE + "check/", {"source": stricter()}, HTTP_HX_REQUEST="true").content.decode()
    assert "Valid definition" in good and "-  auto_approve_at: 0.90" in good and "+  auto_approve_at: 0.95" in good
    assert "not valid YAML" in client.post(BASE + "check/", {"source": "a: ["}, HTTP_HX_REQUEST="true").content.decode()


def test_saving_a_candidate_and_publishing_it(client_for, demo):
    client = client_for("wfadmin")
    refused = client.post(BASE + "edit/", {"source": current_yaml().replace("type: decimal", "type: money")})
    assert refused.status_code == 400 and Workflow.objects.get(slug="customer-reply").versions.count() == 1
    response = client.post(BASE + "edit/", {"source": stricter(), "note": "fewer auto-approvals"}, follow=True)
    assert "Saved as candidate v2" in response.content.decode()
    workflow = Workflow.objects.get(slug="customer-reply")
    candidate = workflow.versions.get(number=2)
    assert candidate.is_candidate and candidate.note == "fewer auto-approvals" and workflow.current_version.number == 1
    page = client.get(BASE).content.decode()
    assert "Publish v2" in page and "Roll back to v1" not in page  # v1 is current: nothing to roll back to
    assert 'id="no-dataset"' in page

    # No reason: refused with the message, nothing published.
    assert "Say why" in client.post(BASE + "2/publish/", {"reason": ""}, follow=True).content.decode()
    # With a dataset, the gate wants the candidate's eval first (never run inside a request).
    evals.cases_import(dataset=evals.dataset_for(workflow), text=json.dumps(
        {"id": "one", "input": CUSTOMER_REPLY_INPUT, "expect": {}}))
    html = client.post(BASE + "2/publish/", {"reason": "stricter"}, follow=True).content.decode()
    assert "v2 was not published: v2 has no finished eval on default: run it first" in html
    assert Workflow.objects.get(slug="customer-reply").current_version.number == 1
    html = client.post(BASE + "2/publish/", {"reason": "stricter", "override": "Urgent policy change."}, follow=True).content.decode()
    assert "v2 is now the current version (gate overridden" in html
    assert AuditEvent.objects.get(action="workflow.publish_overridden").payload["override"] == "Urgent policy change."
    page = client.get(BASE).content.decode()
    assert "Roll back to v1" in page and "Publish v" not in page

    # Roll back to v1: saved as candidate v3, which needs its eval before it goes out.
    html = client.post(BASE + "1/rollback/", {"reason": "too strict"}, follow=True).content.decode()
    assert "saved as a new candidate; it was not published yet" in html
    v3 = Workflow.objects.get(slug="customer-reply").versions.get(number=3)
    assert v3.is_candidate and v3.note == "rollback to v1"
    # A dry run: one case on the workers, nothing else created.
    response = client.post(BASE + "3/dry-run/", {"case": "one"})
    run = EvalRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/evals/runs/{run.pk}/" and run.total == 1
    assert "Choose a case" in client.post(BASE + "3/dry-run/", {"case": "nope"}, follow=True).content.decode()
    assert client.post(BASE + "99/publish/", {"reason": "x"}).status_code == 404
