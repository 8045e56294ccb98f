"""The stop control and the quality monitor (issue 6, section 6): while automation is held,
every new draft waits for a person; the monitor pauses it on a simulated drift of the reviewed
audit sample, and only a person resumes it."""
import pytest

from calibration import maths, monitor
from tests.integration.conftest import drafted, submit
from tests.labelled import labelled_history
from workflows import services
from workflows.labels import Label
from workflows.models import AuditEvent, DomainError, Lane, Workflow


def wf(demo):
    return Workflow.objects.get(slug="customer-reply")


def test_the_stop_control_holds_every_new_draft_until_resumed(demo, customer_reply_input, mailoutbox, django_capture_on_commit_callbacks, make_user):
    lead = make_user("lead", "reviewer", "support-reviewers")
    lead.email = "lead@example.com"
    lead.save()
    make_user("underwriter", "reviewer", "underwriting-reviewers")  # not this workflow's: not told
    admin = demo.users["wfadmin"]
    assert drafted(submit(demo, customer_reply_input), lane="auto").lane == Lane.AUTO_APPROVE
    with django_capture_on_commit_callbacks(execute=True):
        services.workflow_hold(workflow_id=wf(demo).pk, kind="stopped", reason="Provider changed the model.", actor=admin)
    event = AuditEvent.objects.get(action="automation.stopped")
    assert event.actor_id == admin.pk and event.payload["reason"] == "Provider changed the model."
    # The workflow admins and this workflow's reviewers (the demo users have addresses).
    assert sorted(mailoutbox[0].to) == ["lead@example.com", "reviewer@example.com", "wfadmin@example.com"]
    assert "nothing is auto-approved or released" in mailoutbox[0].body

    # A draft the model is sure of, and one in the async lane: both wait, neither is released.
    for lane in ("auto", "async"):
        draft = drafted(submit(demo, customer_reply_input), lane=lane)
        assert draft.lane == Lane.BLOCKING_REVIEW and draft.submission.released_at is None
        assert "automation held: stopped by an admin" in draft.score_components["routing_reason"]

    with pytest.raises(DomainError, match="already held"):
        services.workflow_hold(workflow_id=wf(demo).pk, kind="stopped", reason="again", actor=admin)
    with pytest.raises(DomainError, match="Say why"):
        services.workflow_resume(workflow_id=wf(demo).pk, reason="  ", actor=admin)
    services.workflow_resume(workflow_id=wf(demo).pk, reason="Eval passed on the new model.", actor=admin)
    assert AuditEvent.objects.get(action="automation.resumed").payload["was"] == "stopped"
    assert drafted(submit(demo, customer_reply_input), lane="auto").lane == Lane.AUTO_APPROVE
    with pytest.raises(DomainError, match="not held"):
        services.workflow_resume(workflow_id=wf(demo).pk, reason="x", actor=admin)


def test_the_monitor_pauses_on_drift_and_resumes_only_on_command(demo, customer_reply_input):
    version, user = demo.version("customer-reply"), demo.users["submitter"]
    needed = maths.start_size(0.05)
    # Too few reviewed samples: no evidence either way.
    labelled_history(version, user, [0.95] * 50, [Label.UNCHANGED] * 50, sampled=True)
    assert monitor.check(wf(demo)) == "waiting"
    # A good record: 250 sampled, 2 changed materially -> the bound stays under 5%.
    labelled_history(version, user, [0.95] * 200, [Label.UNCHANGED] * 198 + [Label.MAJOR_EDIT] * 2, sampled=True)
    assert 250 >= needed and monitor.check(wf(demo)) == "ok"
    # Drift: the provider's model got worse; reviewers rewrite 25 of the next 100 samples.
    labelled_history(version, user, [0.95] * 100, [Label.MAJOR_EDIT] * 20 + [Label.REJECTED] * 5 + [Label.MINOR_EDIT] * 75,
                     sampled=True)
    assert monitor.check_all()["customer-reply"] == "paused"
    workflow = wf(demo)
    assert workflow.automation_hold == "monitor"
    event = AuditEvent.objects.get(action="automation.paused")
    assert event.payload["material"] == 27 and event.payload["sampled"] == 350 and event.payload["upper"] > 0.05
    assert event.actor.username == "system"
    assert drafted(submit(demo, customer_reply_input), lane="auto").lane == Lane.BLOCKING_REVIEW
    assert monitor.check(workflow) == "held"  # it does not resume itself

    services.workflow_resume(workflow_id=workflow.pk, reason="Pinned the model version; eval at 96%.",
                             actor=demo.users["wfadmin"])
    # The evidence that paused it was looked at by the person resuming: the count starts again.
    assert monitor.live_escape(wf(demo)).sampled == 0 and monitor.check(wf(demo)) == "waiting"
    assert drafted(submit(demo, customer_reply_input), lane="auto").lane == Lane.AUTO_APPROVE
