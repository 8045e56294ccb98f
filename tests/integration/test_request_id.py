"""The web request's id travels into the tasks it starts and into every log line of them."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import MODEL_API_KEY, NAMESPACE, ROOT, WORKER_NAME, namespaced_settings, wait_for
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
    # The model call's own line (one per HTTP request, written by the engine) carries it too.
    assert any(f"[{request_id}] workflows.pipeline.model_call model call gpt-4o-mini (draft) ok" in line
               for line in log.splitlines()), log[-3000:]


def test_a_task_sent_outside_a_request_gets_an_id_of_its_own(demo, customer_reply_input, fake_model):
    from workflows.tasks import generate_draft

    submission = submit(demo, customer_reply_input)
    generate_draft.apply(args=[submission.pk])
    started = AuditEvent.objects.get(action="draft.generation_started", object_id=str(submission.pk))
    assert started.request_id.startswith("task-")


# --- JSON lines (issue 9): a worker in production log format --------------------------------


@contextlib.contextmanager
def _tasks_sent_to(namespace: str):
    """Route this process's tasks to the queues of ``namespace`` (and back afterwards)."""
    from django.conf import settings

    from reviewdesk.celery import app

    def route(values):
        for name, value in values.items():
            setattr(settings, name, value)
        app.conf.update(task_default_queue=settings.CELERY_TASK_DEFAULT_QUEUE, task_routes=settings.CELERY_TASK_ROUTES)
        app.amqp.flush_routes()
        app.amqp.__dict__.pop("router", None)  # rebuilt from the new routes on the next send

    before = {name: getattr(settings, name) for name in namespaced_settings(namespace, redis=False)}
    route(namespaced_settings(namespace, redis=False))
    try:
        yield
    finally:
        route(before)


@pytest.fixture
def json_worker(worker, model_server, tmp_path):
    """A second real worker, logging JSON lines (REVIEWDESK_LOG_FORMAT=json), on queues of its own."""
    from django.db import connection

    namespace = f"{NAMESPACE}json."
    queues = f"{namespace}llm,{namespace}celery"
    env = {**os.environ, "REVIEWDESK_NAMESPACE": namespace, "REVIEWDESK_LOG_FORMAT": "json",
           "DATABASE_URL": os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + connection.settings_dict["NAME"],
           "OPENAI_API_KEY": MODEL_API_KEY, "OPENAI_BASE_URL": model_server.base_url,
           "REVIEWDESK_LLM_MAX_RETRIES": "0", "DJANGO_DEBUG": "true"}
    name = f"json-{WORKER_NAME}"
    log_path = tmp_path / "json-worker.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "reviewdesk", "worker", "-Q", queues,
                                 "--concurrency", "2", "-l", "info", "--without-heartbeat", "--without-mingle",
                                 "--without-gossip", "-n", name], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    from reviewdesk.celery import app

    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[name], timeout=1.0):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
        proc.log_path = log_path
        with _tasks_sent_to(namespace):
            yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _json_lines(path) -> list[dict]:
    lines = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))  # every line our logging writes must be valid JSON
    return lines


def test_json_lines_of_a_task_and_of_its_model_call_carry_the_web_requests_id(json_worker, demo,
                                                                              customer_reply_input):
    request_id = f"req-{unique_marker()}"
    customer_reply_input["complaint"] += " [[lane:auto]]"
    token = request_id_var.set(request_id)
    try:
        submission = submit(demo, customer_reply_input)
    finally:
        request_id_var.reset(token)
    wait_routed(submission.pk)

    def drafted_line():
        mine = [line for line in _json_lines(json_worker.log_path) if line.get("request_id") == request_id]
        return mine if any(line["logger"] == "workflows.tasks" for line in mine) else None

    mine = wait_for(drafted_line, message="the JSON worker's log lines for this request")
    task_line = next(line for line in mine if line["logger"] == "workflows.tasks")
    assert f"submission {submission.pk} attempt 1" in task_line["event"] and task_line["level"] == "info"
    calls = [line for line in mine if line["logger"] == "workflows.pipeline.model_call"]
    assert calls, "the model call wrote no log line with the request id"
    call = calls[0]
    assert (call["model"], call["outcome"], call["purpose"], call["engine"]) == ("gpt-4o-mini", "ok", "draft", "openai")
    assert call["prompt_tokens"] > 0 and call["completion_tokens"] > 0 and call["http_status"] == 200
    assert call["timestamp"].endswith("Z")
    # The same id as the audit events the task wrote.
    assert set(AuditEvent.objects.filter(object_id=str(submission.pk), action="draft.routed")
               .values_list("request_id", flat=True)) == {request_id}
