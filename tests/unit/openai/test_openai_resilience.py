"""Timeouts, retries in one layer, and the circuit breaker shared through Redis, against the
fake OpenAI-compatible server on loopback with the real openai client.

Every HTTP request sent leaves one CallRecord (the server's own request log is the witness);
a request the open circuit kept back leaves one too, with outcome circuit_open.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from workflows.pipeline.engines import breaker
from workflows.pipeline.engines.openai import OpenAIEngine, reset_provider_state
from workflows.pipeline.types import ModelRequest, ModelUnavailable, Timeouts
from workflows.vocab import CallOutcome

ROOT = Path(__file__).resolve().parents[3]
E, T, R, OK = CallOutcome.ERROR, CallOutcome.TIMEOUT, CallOutcome.RATE_LIMITED, CallOutcome.OK


@pytest.fixture
def engine(server, settings):
    settings.OPENAI_API_KEY = "sk-test"
    settings.OPENAI_BASE_URL = server.base_url
    settings.REVIEWDESK_LLM_MAX_RETRIES = 2
    settings.REVIEWDESK_LLM_RETRY_WAIT_CAP = 3.0
    settings.REVIEWDESK_LLM_BREAKER_FAIL_MAX = 5
    settings.REVIEWDESK_LLM_BREAKER_RESET_SECONDS = 30
    server.reset()
    return OpenAIEngine(api_key="sk-test", base_url=server.base_url)


def request_for(model: str, user: str, *, total=5.0, connect=1.0) -> ModelRequest:
    # Text output: an unexplained 500 is a plain failure here (for JSON requests it is first
    # taken for a refused response_format: test_openai_compat.py).
    return ModelRequest(model=model, system="", user=user, json_schema=None, temperature=0.0, max_tokens=100,
                        timeouts=Timeouts(connect=connect, total=total))


def outcomes(calls) -> list:
    return [c.outcome for c in calls]


# --- retries ---------------------------------------------------------------------------------


def test_a_500_then_success_is_two_records_and_a_reply(engine, server, model_name):
    reply = engine.complete(request_for(model_name, "[[status:500:1]] r-1"))
    assert outcomes(reply.calls) == [E, OK]
    assert reply.calls[0].http_status == 500 and "scripted HTTP 500" in reply.calls[0].error
    assert reply.calls[1].http_status == 200
    assert len(server.calls_for("r-1")) == 2


def test_a_dead_provider_costs_max_retries_plus_one_requests_each_recorded(engine, server, model_name):
    with pytest.raises(ModelUnavailable) as info:
        engine.complete(request_for(model_name, "[[status:503:99]] r-2"))
    assert outcomes(info.value.calls) == [E, E, E]
    assert [c.http_status for c in info.value.calls] == [503, 503, 503]
    assert len(server.calls_for("r-2")) == 3
    assert info.value.retryable and "after 3 tries" in info.value.reason


def test_backoff_grows_between_retries(engine, server, model_name, monkeypatch):
    # Jitter at its top: 0.5 s before the first retry, 1.0 s before the second.
    monkeypatch.setattr("workflows.pipeline.engines.openai.random.uniform", lambda low, high: high)
    started = time.monotonic()
    reply = engine.complete(request_for(model_name, "[[status:502:2]] r-3"))
    elapsed = time.monotonic() - started
    assert outcomes(reply.calls) == [E, E, OK]
    assert 1.5 <= elapsed < 2.5


def test_429_with_retry_after_is_waited_for(engine, server, model_name):
    started = time.monotonic()
    reply = engine.complete(request_for(model_name, "[[429-retry-after:1.2]] r-4"))
    elapsed = time.monotonic() - started
    assert outcomes(reply.calls) == [R, OK]
    assert reply.calls[0].http_status == 429
    assert 1.2 <= elapsed < 2.2  # the server's 1.2 s, not our 0.25-0.5 s backoff


def test_retry_after_ms_is_honoured(engine, server, model_name):
    started = time.monotonic()
    reply = engine.complete(request_for(model_name, "[[429-retry-after-ms:800]] r-5"))
    assert outcomes(reply.calls) == [R, OK]
    assert 0.8 <= time.monotonic() - started < 1.8


def test_a_retry_after_beyond_the_cap_goes_to_the_next_model_at_once(engine, server, settings, model_name):
    settings.REVIEWDESK_LLM_RETRY_WAIT_CAP = 1.0
    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as info:
        engine.complete(request_for(model_name, "[[429-retry-after:20]] r-6"))
    assert time.monotonic() - started < 1.0
    assert outcomes(info.value.calls) == [R]
    assert info.value.retryable and "asked to wait 20s" in info.value.reason


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_not_retried(engine, server, model_name, status):
    with pytest.raises(ModelUnavailable) as info:
        engine.complete(request_for(model_name, f"[[status:{status}:99]] r-7-{status}"))
    (call,) = info.value.calls
    assert call.outcome == CallOutcome.CLIENT_ERROR and call.http_status == status
    assert not info.value.retryable
    assert len(server.calls_for(f"r-7-{status}")) == 1


def test_an_exhausted_quota_is_not_retried_and_needs_a_person(engine, server, model_name):
    with pytest.raises(ModelUnavailable) as info:
        engine.complete(request_for(model_name, "[[quota-exhausted]] r-11"))
    (call,) = info.value.calls
    assert call.outcome == R and call.http_status == 429
    assert not info.value.retryable


def test_a_server_saying_do_not_retry_is_obeyed(engine, server, model_name):
    with pytest.raises(ModelUnavailable) as info:
        engine.complete(request_for(model_name, "[[status:503:9]] [[should-retry:false]] r-12"))
    assert outcomes(info.value.calls) == [E]
    assert info.value.retryable and "asked not to retry" in info.value.reason


# --- timeouts --------------------------------------------------------------------------------


def test_a_timeout_is_recorded_retried_and_then_unavailable(engine, server, settings, model_name):
    settings.REVIEWDESK_LLM_MAX_RETRIES = 1
    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as info:
        engine.complete(request_for(model_name, "[[slow:3]] r-8", total=0.5, connect=0.5))
    elapsed = time.monotonic() - started
    assert outcomes(info.value.calls) == [T, T]
    assert all(c.http_status is None and 450 <= c.latency_ms < 1000 for c in info.value.calls)
    assert "timed out after 0.5s" in info.value.calls[0].error
    assert elapsed < 0.5 * 2 + 1.0  # two timeouts and one backoff; the server's 3 s never waited for
    assert len(server.calls_for("r-8")) == 2


def test_a_slow_first_answer_times_out_and_the_retry_succeeds(engine, server, model_name):
    reply = engine.complete(request_for(model_name, "[[slow:1.5:1]] r-9", total=0.8))
    assert outcomes(reply.calls) == [T, OK]


def test_all_tries_of_one_model_stay_within_its_time_budget(engine, server, settings, model_name):
    # Budget: total x (retries + 1) + retries x cap = 0.6 x 3 + 2 x 0.2 = 2.2 s.
    settings.REVIEWDESK_LLM_RETRY_WAIT_CAP = 0.2
    started = time.monotonic()
    with pytest.raises(ModelUnavailable):
        engine.complete(request_for(model_name, "[[slow:5]] r-10", total=0.6, connect=0.3))
    assert time.monotonic() - started < 2.2 + 0.3


# --- circuit breaker -------------------------------------------------------------------------


def _redis():
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def _forget_process_breakers():
    """What a second worker process starts with: no breaker objects, only Redis."""
    breaker._breakers.clear()


def test_the_breaker_opens_after_fail_max_failures_and_another_worker_sees_it_open(engine, server, settings,
                                                                                 model_name):
    settings.REVIEWDESK_LLM_MAX_RETRIES = 0
    settings.REVIEWDESK_LLM_BREAKER_FAIL_MAX = 3
    for n in range(3):
        with pytest.raises(ModelUnavailable):
            engine.complete(request_for(model_name, f"[[status:503:99]] b-1-{n}"))
    name = f"{breaker._prefix()}:{breaker.provider_of(server.base_url)}:{model_name}"
    assert _redis().get(f"{name}:pybreaker:state") == b"open"

    _forget_process_breakers()
    other_worker = OpenAIEngine(api_key="sk-test", base_url=server.base_url)
    sent_before = len(server.requests)
    with pytest.raises(ModelUnavailable) as info:
        other_worker.complete(request_for(model_name, "b-1-after"))
    (call,) = info.value.calls
    assert call.outcome == CallOutcome.CIRCUIT_OPEN and call.http_status is None and call.latency_ms == 0
    assert len(server.requests) == sent_before  # no request was sent
    assert info.value.retryable and "circuit open" in info.value.reason
    assert breaker.circuit_state(model_name) == "open"


def test_the_breaker_stops_retries_of_a_call_in_progress(engine, server, settings, model_name):
    settings.REVIEWDESK_LLM_MAX_RETRIES = 4
    settings.REVIEWDESK_LLM_BREAKER_FAIL_MAX = 2
    settings.REVIEWDESK_LLM_RETRY_WAIT_CAP = 0.5
    with pytest.raises(ModelUnavailable) as info:
        engine.complete(request_for(model_name, "[[status:500:99]] b-2"))
    assert outcomes(info.value.calls) == [E, E, CallOutcome.CIRCUIT_OPEN]
    assert len(server.calls_for("b-2")) == 2


def test_after_reset_timeout_one_trial_request_closes_the_breaker(engine, server, settings, model_name):
    settings.REVIEWDESK_LLM_MAX_RETRIES = 0
    settings.REVIEWDESK_LLM_BREAKER_FAIL_MAX = 2
    settings.REVIEWDESK_LLM_BREAKER_RESET_SECONDS = 2
    user = "[[status:503:2]] b-3"  # the provider fails twice, then recovers
    for _ in range(2):
        with pytest.raises(ModelUnavailable):
            engine.complete(request_for(model_name, user))
    assert breaker.circuit_state(model_name) == "open"
    assert 0 < breaker.seconds_until_any_allows([model_name]) <= 2
    with pytest.raises(ModelUnavailable):  # still open: nothing sent
        engine.complete(request_for(model_name, user))
    assert len(server.calls_for("b-3")) == 2

    time.sleep(2.1)
    assert breaker.circuit_state(model_name) == "half-open"
    assert breaker.any_circuit_allows([model_name])
    reply = engine.complete(request_for(model_name, user))
    assert outcomes(reply.calls) == [OK]
    assert breaker.circuit_state(model_name) == "closed"


def test_a_failed_trial_opens_the_breaker_again(engine, server, settings, model_name):
    settings.REVIEWDESK_LLM_MAX_RETRIES = 0
    settings.REVIEWDESK_LLM_BREAKER_FAIL_MAX = 1
    settings.REVIEWDESK_LLM_BREAKER_RESET_SECONDS = 1
    with pytest.raises(ModelUnavailable):
        engine.complete(request_for(model_name, "[[status:503:99]] b-4"))
    time.sleep(1.1)
    assert breaker.circuit_state(model_name) == "half-open"
    with pytest.raises(ModelUnavailable) as info:
        engine.complete(request_for(model_name, "[[status:503:99]] b-4"))
    assert outcomes(info.value.calls) == [E]
    assert breaker.circuit_state(model_name) == "open"


def test_client_errors_and_refusals_do_not_count_for_the_breaker(engine, server, settings, model_name):
    settings.REVIEWDESK_LLM_BREAKER_FAIL_MAX = 1
    for status in (401, 404, 400):
        with pytest.raises(ModelUnavailable):
            engine.complete(request_for(model_name, f"[[status:{status}:99]] b-5"))
    refused = request_for(model_name, "[[profile:no-logprobs]] b-5")
    engine.complete(refused)
    assert breaker.circuit_state(model_name) == "closed"


def test_the_breaker_is_per_model_and_the_helpers_list_the_chain(engine, server, settings, model_name):
    settings.REVIEWDESK_LLM_MAX_RETRIES = 0
    settings.REVIEWDESK_LLM_BREAKER_FAIL_MAX = 1
    healthy = f"{model_name}-fallback"
    with pytest.raises(ModelUnavailable):
        engine.complete(request_for(model_name, "[[status:500:99]] b-6"))
    assert breaker.circuit_states([model_name, healthy]) == [(model_name, "open"), (healthy, "closed")]
    assert breaker.any_circuit_allows([model_name, healthy])
    assert breaker.seconds_until_any_allows([model_name, healthy]) == 0
    assert not breaker.any_circuit_allows([model_name])
    assert engine.complete(request_for(healthy, "b-6")).calls[0].outcome == OK


def test_the_breaker_is_per_provider(engine, server, settings, model_name):
    settings.REVIEWDESK_LLM_MAX_RETRIES = 0
    settings.REVIEWDESK_LLM_BREAKER_FAIL_MAX = 1
    with pytest.raises(ModelUnavailable):
        engine.complete(request_for(model_name, "[[status:500:99]] b-7"))
    other_provider = server.base_url.replace("127.0.0.1", "localhost")
    assert breaker.circuit_state(model_name) == "open"
    assert breaker.circuit_state(model_name, base_url=other_provider) == "closed"
    reset_provider_state(other_provider)


def test_without_redis_the_breaker_lives_in_process_memory(engine, server, settings, model_name):
    settings.REDIS_URL = ""
    settings.REVIEWDESK_LLM_MAX_RETRIES = 0
    settings.REVIEWDESK_LLM_BREAKER_FAIL_MAX = 1
    with pytest.raises(ModelUnavailable):
        engine.complete(request_for(model_name, "[[status:500:99]] b-8"))
    assert breaker.circuit_state(model_name) == "open"
    assert not _redis().keys(f"*{model_name}*")


def test_an_unreachable_redis_costs_the_breaker_not_the_call(engine, server, settings, model_name):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    reply = engine.complete(request_for(model_name, "b-9"))
    assert outcomes(reply.calls) == [OK]


# --- the settings refuse a budget that cannot fit the task -----------------------------------


def _start(**env_overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "REVIEWDESK_"))}
    env.update(DJANGO_SETTINGS_MODULE="reviewdesk.settings", DJANGO_DEBUG="true", **env_overrides)
    code = "import django; django.setup(); print('started')"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def test_the_default_model_budget_fits_the_default_task_time_limit():
    # 3 models x (30 s x 3 tries + 2 x 3 s) = 288 s < 295 s.
    proc = _start()
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("overrides", [
    {"REVIEWDESK_LLM_TIMEOUT": "60"},
    {"REVIEWDESK_LLM_MAX_RETRIES": "5"},
    {"REVIEWDESK_TASK_TIME_LIMIT": "120"},
    {"REVIEWDESK_LLM_MAX_MODELS": "4"},
])
def test_settings_refuse_model_calls_that_cannot_fit_in_the_task(overrides):
    proc = _start(**overrides)
    assert proc.returncode != 0
    assert "Model calls cannot fit in one task" in proc.stderr
    assert "must be less than the task's soft time limit" in proc.stderr


def test_a_smaller_budget_fits_a_shorter_task():
    proc = _start(REVIEWDESK_TASK_TIME_LIMIT="120", REVIEWDESK_LLM_TIMEOUT="10")  # 3 x (30 + 6) = 108 < 115
    assert proc.returncode == 0, proc.stderr


def test_reset_provider_state_closes_every_circuit_and_forgets_refusals(engine, server, settings, model_name):
    from workflows.pipeline.engines import compat
    from workflows.pipeline.engines.openai import reset_provider_state

    settings.REVIEWDESK_LLM_MAX_RETRIES = 0
    settings.REVIEWDESK_LLM_BREAKER_FAIL_MAX = 1
    with pytest.raises(ModelUnavailable):
        engine.complete(request_for(model_name, "[[status:500:99]] b-10"))
    json_request = ModelRequest(model=model_name + "-json", system="", user="[[profile:no-logprobs]] b-10",
                                json_schema={"type": "object"}, temperature=0.0, max_tokens=50,
                                timeouts=Timeouts(connect=1.0, total=5.0))
    engine.complete(json_request)
    provider = breaker.provider_of(server.base_url)
    assert compat.remembered(provider, model_name + "-json", wants_json=True).dropped
    assert breaker.circuit_state(model_name) == "open"

    reset_provider_state(server.base_url)
    assert breaker.circuit_state(model_name) == "closed"
    assert not compat.remembered(provider, model_name + "-json", wants_json=True).dropped
    assert outcomes(engine.complete(request_for(model_name, "b-10-after")).calls) == [OK]


def test_the_read_timeout_is_what_is_left_of_the_total_once_connected():
    # httpx's read timeout restarts after connecting; the request hook makes it the rest of
    # the total, so a slow connect plus a slow answer still time out at the total.
    from workflows.pipeline.engines.openai import _hold_total_timeout

    class Request:
        def __init__(self):
            self.extensions = {"timeout": {"connect": 1.0, "read": 1.0, "write": 1.0, "pool": 1.0}}

    request = Request()
    _hold_total_timeout(request)
    time.sleep(0.3)  # connecting
    request.extensions["trace"]("http11.receive_response_headers.started", {})
    assert 0.6 < request.extensions["timeout"]["read"] <= 0.71


def test_a_half_open_circuit_lets_exactly_one_trial_through_across_workers(engine, server, settings, model_name):
    settings.REVIEWDESK_LLM_BREAKER_FAIL_MAX = 2
    settings.REVIEWDESK_LLM_BREAKER_RESET_SECONDS = 1
    circuit = breaker.circuit_for(model_name, base_url=server.base_url)
    for _ in range(2):
        circuit.record_failure("503")
    assert circuit.state() == "open" and not circuit.allows()
    time.sleep(1.1)
    _forget_process_breakers()
    other_worker = breaker.circuit_for(model_name, base_url=server.base_url)
    assert circuit.state() == other_worker.state() == "half-open"
    # Ten threads of two workers ask at once: one trial request goes out, the rest wait.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda i: (circuit if i % 2 else other_worker).allows(), range(10)))
    assert answers.count(True) == 1
    circuit.record_success()  # the trial answered: closed for everyone
    assert other_worker.state() == "closed" and all(other_worker.allows() for _ in range(3))


def test_an_answer_sent_while_closed_leaves_another_callers_trial_slot_alone(engine, server, settings, model_name):
    # Only the trial's own outcome frees the half-open slot (breaker.py, ModelCircuit._report):
    # a success that went out while the circuit was closed holds no slot, so it neither frees
    # another caller's trial nor costs a Redis round trip per answer.
    circuit = breaker.circuit_for(model_name, base_url=server.base_url)
    assert circuit.allows()  # closed: no slot taken
    assert breaker._take_trial_slot(circuit.name)  # another caller's trial
    circuit.record_success()
    assert not breaker._take_trial_slot(circuit.name)  # still theirs
    breaker._free_trial_slot(circuit.name)
