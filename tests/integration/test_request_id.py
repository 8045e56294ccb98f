"""The web request's id travels into the tasks it starts and into every log line of them."""
from pathlib import Path

from tests.conftest import wait_for
from tests.integration.conftest import submit, unique_marker, wait_routed
from workflows.models import AuditEvent
from workflows.request_context import request_id_var


def test_the_request_id_reaches_the_workers_audit_events_and_log_lines(worker, fake_model, demo, customer_reply_input):
    request_id = f"req-{unique_marker()}"
    customer_reply_input["complaint"] += " [[lane:async]]"
    token = request_id_var.set(request_id)
    try:
        submission = submit(demo, customer_reply_input)  # enqueued on commit, inside "the request"
    finally:
        request_id_var.reset(token)
    wait_routed(submission.pk)
    made_by_worker = AuditEvent.objects.filter(action__in=["draft.generation_started", "draft.routed"],
                                               object_id=str(submission.pk))
    assert made_by_worker.count() == 2
    assert set(made_by_worker.values_list("request_id", flat=True)) == {request_id}
    log = wait_for(lambda: request_id in Path(worker.log_path).read_text() and Path(worker.log_path).read_text(),
                   message="the worker's log line with the request id")
    assert f"[{request_id}]" in log


def test_a_task_sent_outside_a_request_gets_an_id_of_its_own(demo, customer_reply_input, fake_model):
    from workflows.tasks import generate_draft

    submission = submit(demo, customer_reply_input)
    generate_draft.apply(args=[submission.pk])
    started = AuditEvent.objects.get(action="draft.generation_started", object_id=str(submission.pk))
    assert started.request_id.startswith("task-")
