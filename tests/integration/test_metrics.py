"""GET /metrics: ReviewDesk's counters read from the database the real worker wrote, and the
endpoint refused to anonymous readers in production settings (issue 9)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT
from tests.fake_openai import _user_message
from tests.integration.conftest import submit, unique_marker, wait_routed
from workflows.models import LLMCall, ReviewTask
from workflows.pipeline.engines import breaker

TOKEN = "metrics-token-for-the-tests-0123456789"


def scrape(client, token: str = TOKEN) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_metrics_count_real_drafts_made_by_the_worker(worker, fake_model, demo, customer_reply_input, client, settings):
    settings.REVIEWDESK_METRICS_TOKEN = TOKEN
    settings.DEBUG = False
    marker = unique_marker()
    made = {}
    for lane in ("auto", "blocking"):
        data = dict(customer_reply_input, complaint=f"{customer_reply_input['complaint']} {marker} [[lane:{lane}]]")
        made[lane] = submit(demo, data)
    for submission in made.values():
        wait_routed(submission.pk)

    samples = scrape(client)

    assert value(samples, "reviewdesk_drafts_total", workflow="customer-reply", lane="auto_approve") == 1
    assert value(samples, "reviewdesk_drafts_total", workflow="customer-reply", lane="blocking_review") == 1
    # Tokens: the prompt tokens are what the fake server counted in the requests it received.
    requests = fake_model.calls_for(marker)
    assert len(requests) >= 2
    prompt = sum(len(_user_message(r).split()) for r in requests)
    assert value(samples, "reviewdesk_llm_tokens_total", model="gpt-4o-mini", type="prompt") == prompt
    calls = LLMCall.objects.filter(model="gpt-4o-mini")
    completion = sum(c.completion_tokens for c in calls)
    assert completion > 0
    assert value(samples, "reviewdesk_llm_tokens_total", model="gpt-4o-mini", type="completion") == completion
    # Cost: the price table's numbers (gpt-4o-mini: 0.15 / 0.60 USD per million tokens).
    expected_cost = (Decimal(prompt) * Decimal("0.15") + Decimal(completion) * Decimal("0.60")) / 1_000_000
    assert value(samples, "reviewdesk_llm_cost_usd_total", workflow="customer-reply", model="gpt-4o-mini") \
        == pytest.approx(float(expected_cost), rel=1e-9)
    # Latency histogram: every request is counted once, and the buckets only grow.
    ok = {"model": "gpt-4o-mini", "outcome": "ok"}
    assert value(samples, "reviewdesk_llm_call_duration_seconds_count", **ok) == len(requests) == calls.count()
    buckets = [value(samples, "reviewdesk_llm_call_duration_seconds_bucket", le=le, **ok)
               for le in ("0.1", "1.0", "10.0", "60.0", "+Inf")]
    assert buckets == sorted(buckets) and buckets[-1] == len(requests)
    assert value(samples, "reviewdesk_llm_call_duration_seconds_sum", **ok) == pytest.approx(
        sum(c.latency_ms for c in calls) / 1000)
    # Submissions by state, review age: the blocking draft waits for a reviewer.
    assert value(samples, "reviewdesk_submissions", workflow="customer-reply", state="routed") >= 1
    assert value(samples, "reviewdesk_review_open_tasks", lane="blocking_review") == 1
    assert value(samples, "reviewdesk_review_oldest_open_seconds", lane="blocking_review") > 0
    # The auto-approved draft is sampled for audit review one time in twenty (routing's
    # audit_sample_rate 0.05): then the async lane holds that task, otherwise nothing.
    sampled = ReviewTask.objects.open().filter(lane="async_review", sampled=True).exists()
    assert (value(samples, "reviewdesk_review_oldest_open_seconds", lane="async_review") > 0) == sampled
    assert value(samples, "reviewdesk_circuit_breaker_state", model="gpt-4o-mini") == 0
    assert value(samples, "reviewdesk_queue_depth", queue="llm") == 0
    assert value(samples, "reviewdesk_metrics_source_up", source="database") == 1
    assert value(samples, "reviewdesk_metrics_source_up", source="redis") == 1


def test_an_open_circuit_and_waiting_tasks_show_at_scrape_time(db, fake_model, client, settings, redis_client):
    from reviewdesk.celery import app
    from workflows.dispatch import GENERATE_DRAFT

    settings.REVIEWDESK_METRICS_TOKEN = TOKEN
    circuit = breaker.circuit_for("gpt-4o-mini", base_url=settings.OPENAI_BASE_URL)
    for _ in range(settings.REVIEWDESK_LLM_BREAKER_FAIL_MAX):
        circuit.record_failure("HTTP 500: down")
    # A queue no worker consumes, so the two messages stay where Prometheus should count them.
    queue = f"{settings.REVIEWDESK_NAMESPACE}idle-{unique_marker()}"
    settings.REVIEWDESK_LLM_QUEUE = queue
    try:
        for _ in range(2):
            app.send_task(GENERATE_DRAFT, args=[0], queue=queue)
        samples = scrape(client)
    finally:
        redis_client.delete(queue)
    assert value(samples, "reviewdesk_circuit_breaker_state", model="gpt-4o-mini") == 2
    assert value(samples, "reviewdesk_queue_depth", queue="llm") == 2


PRODUCTION_CLIENT = """
import json, os
import django
django.setup()
from django.test import Client
from django.conf import settings
assert settings.DEBUG is False
client = Client()
out = {"anonymous": client.get("/metrics").status_code,
       "wrong": client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token-at-all").status_code}
if settings.REVIEWDESK_METRICS_TOKEN:
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer " + settings.REVIEWDESK_METRICS_TOKEN)
    out["token"] = response.status_code
    out["www_authenticate"] = client.get("/metrics").get("WWW-Authenticate", "")
    out["body"] = response.content.decode()
print(json.dumps(out))
"""


def _production(token: str | None) -> dict:
    from django.db import connection

    env = {**os.environ, "DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "x" * 50,
           "DJANGO_ALLOWED_HOSTS": "testserver", "DJANGO_SETTINGS_MODULE": "reviewdesk.settings",
           "DATABASE_URL": os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + connection.settings_dict["NAME"]}
    env.pop("REVIEWDESK_METRICS_TOKEN", None)
    if token:
        env["REVIEWDESK_METRICS_TOKEN"] = token
    done = subprocess.run([sys.executable, "-c", PRODUCTION_CLIENT], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_production_settings_refuse_anonymous_readers_and_accept_the_token(transactional_db):
    # No token configured: the endpoint does not exist for anyone.
    assert _production(None) == {"anonymous": 404, "wrong": 404}
    # A token configured: without it (or with another) 401, with it the metrics.
    seen = _production(TOKEN)
    assert (seen["anonymous"], seen["wrong"], seen["token"]) == (401, 401, 200)
    assert seen["www_authenticate"].startswith("Bearer")
    names = {f.name for f in text_string_to_metric_families(seen["body"])}
    assert {"reviewdesk_drafts", "reviewdesk_llm_call_duration_seconds", "reviewdesk_queue_depth",
            "django_http_requests_latency_seconds_by_view_method"} <= names
    assert 'reviewdesk_metrics_source_up{source="database"} 1.0' in seen["body"]


def test_development_without_a_token_is_open_but_a_configured_token_is_always_required(db, client, settings):
    settings.DEBUG = True
    settings.REVIEWDESK_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 200
    settings.REVIEWDESK_METRICS_TOKEN = TOKEN
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
