"""The calibration page: who may see it, bad input, and labelled decisions through to the
numbers it shows (the maths itself: tests/unit/test_calibration_maths.py)."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from calibration import maths
from calibration.selectors import labelled_drafts
from tests.labelled import labelled_history
from workflows import services
from workflows.labels import Label
from workflows.models import ReviewTask

from .conftest import DRAFT_CONTENT

URL = "/calibration/customer-reply/"


@pytest.fixture
def decided(people, routed):
    """Ten labelled customer replies: four audit-sampled auto-approvals kept as they were, three
    async drafts (two kept, one rewritten) and three held drafts rejected."""
    reviewer = people["reviewer_a"]

    def decide(submission, how):
        task = ReviewTask.objects.open().get(submission=submission)
        services.review_claim(task_id=task.pk, user=reviewer)
        if how == "approve":
            services.review_approve(task_id=task.pk, user=reviewer)
        elif how == "rewrite":
            rewritten = {**DRAFT_CONTENT["customer-reply"], "reply": "We refunded the order in full today; no need to send it back."}
            services.review_approve(task_id=task.pk, user=reviewer, edited_output=json.dumps(rewritten))
        else:
            services.review_reject(task_id=task.pk, user=reviewer, reason_code="inaccurate", reason_text="Wrong.")

    for _ in range(4):
        decide(routed(people["submitter"], lane="auto_approve", sampled=True), "approve")
    for how in ("approve", "approve", "rewrite"):
        decide(routed(people["submitter"], lane="async_review"), how)
    for _ in range(3):
        decide(routed(people["submitter"], lane="blocking_review"), "reject")
    # An undecided draft is not a label.
    routed(people["submitter"], lane="blocking_review")


@pytest.mark.parametrize("who", ["submitter", "reviewer_a", "reviewer_b", "other_submitter"])
def test_only_workflow_admins_and_compliance_see_it(client_for, who):
    for url in ("/calibration/", URL, URL + "curve.csv"):
        assert client_for(who).get(url).status_code == 404


def test_anonymous_goes_to_login(client_for):
    response = client_for(None).get(URL)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.parametrize("who", ["wfadmin", "compliance"])
def test_index_lists_workflows_and_unknown_slug_is_404(client_for, who):
    client = client_for(who)
    index = client.get("/calibration/")
    assert index.status_code == 200 and URL in index.content.decode()
    assert client.get("/calibration/no-such-workflow/").status_code == 404


@pytest.mark.parametrize("query, message", [
    ("alpha=0", "greater than or equal to 0.1"), ("alpha=abc", "Enter a number"), ("alpha=60", "less than or equal to 50"),
    ("version=999", "Select a valid choice"), ("version=x", "Select a valid choice"),
])
def test_bad_input_is_a_400_with_a_message(client_for, query, message):
    for url in (URL, URL + "curve.csv"):
        response = client_for("wfadmin").get(f"{url}?{query}")
        assert response.status_code == 400 and message in response.content.decode()


def test_labels_reach_the_page(client_for, decided, demo):
    version = demo.version("customer-reply")
    data = labelled_drafts(version)
    assert data.count == 10 and data.sampled == 4
    assert data.by_label == {"unchanged": 6, "minor_edit": 0, "major_edit": 1, "rejected": 3}
    # Each sampled auto-approval stands for 1 / 5% = 20 drafts.
    assert sorted(data.weights) == [1.0] * 6 + [20.0] * 4

    response = client_for("wfadmin").get(URL + "?alpha=2")
    assert response.status_code == 200
    html = response.content.decode()
    assert ">10</strong> labelled, 4 from the audit sample" in html
    assert "major edit 1 · rejected or sent back 3" in html
    expected_auroc = maths.auroc(data.scores, data.bad)
    assert 0.9 < expected_auroc <= 1 and f"{expected_auroc:.3f}" in html
    # Auto-approving at the current 0.90 covers the four sampled drafts, weighted 80 of 86.
    assert "auto-approves at 0.90: 93% of drafts, observed escape rate 0.0%" in html
    # Ten labels cannot certify anything at 2%: the page says how many more are needed.
    start = maths.start_size(0.02)
    assert "No threshold can be recommended yet." in html
    assert f"At least {start} labelled drafts are needed before any threshold can be tested ({start - 10} more)" in html
    chart = json.loads(html.split('id="calibration-data" type="application/json">')[1].split("</script>")[0])
    assert chart["alpha"] == 0.02 and chart["current"] == 0.9 and len(chart["reliability"]) == 10

    rows = list(csv.reader(io.StringIO(client_for("compliance").get(URL + "curve.csv").content.decode())))
    assert rows[0][:2] == ["threshold", "labelled_covered"] and rows[-1][1] == "10"


def test_stop_and_resume_from_the_page(client_for, people):
    client = client_for("wfadmin")
    page = client.get(URL).content.decode()
    assert "Running:" in page and "Stop automation" in page
    assert client.post(URL + "stop/", {"reason": "  "}, follow=True).content.decode().count("Say why") == 1
    response = client.post(URL + "stop/", {"reason": "Model incident at the provider."}, follow=True)
    html = response.content.decode()
    assert "every new draft waits for a reviewer" in html and "Resume automation" in html
    assert "Model incident at the provider." in html
    # Compliance sees the state, cannot act; reviewers and submitters are not there at all.
    compliance = client_for("compliance").get(URL).content.decode()
    assert "Stopped" in compliance and "automation-form" not in compliance
    for who in ("compliance", "reviewer_a", "submitter"):
        assert client_for(who).post(URL + "resume/", {"reason": "x"}).status_code == 404
    assert client.get(URL + "resume/").status_code == 405
    assert "Running:" in client.post(URL + "resume/", {"reason": "Checked."}, follow=True).content.decode()


def test_applying_a_recommendation_saves_a_candidate_not_a_publication(client_for, demo):
    rng = np.random.default_rng(4)
    scores = rng.beta(5, 2, 2000)
    bad = rng.random(2000) < 1 / (1 + np.exp(15 * (scores - 0.6)))
    labelled_history(demo.version("customer-reply"), demo.users["submitter"], scores,
                     [Label.REJECTED if b else Label.UNCHANGED for b in bad])
    client = client_for("wfadmin")
    page = client.get(URL + "?alpha=5").content.decode()
    assert 'id="apply-form"' in page
    response = client.post(URL + "apply/?version=1&alpha=5", follow=True)
    html = response.content.decode()
    assert "Saved as candidate v2" in html
    workflow = demo.workflows["customer-reply"]
    v2 = workflow.versions.get(number=2)
    assert v2.is_candidate and workflow.current_version.number == 1
    rec = v2.spec.routing.auto_approve_at
    assert 0.6 <= rec < 0.9 and f"auto_approve_at: {rec:.2f}" in v2.source_yaml
    assert v2.note.startswith("calibration: at ")
    # Compliance reads the page but cannot apply; a bad alpha is refused.
    assert client_for("compliance").post(URL + "apply/?version=1&alpha=5").status_code == 404
    assert "no recommendation" in client.post(URL + "apply/?version=1&alpha=0.1", follow=True).content.decode()
