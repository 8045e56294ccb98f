"""The openai engine against the fake OpenAI-compatible server on loopback, with the real
client: what one request carries, what one reply and its record hold.

Retries, timeouts and the circuit breaker are in test_openai_resilience.py; refused
parameters in test_openai_compat.py.
"""
from __future__ import annotations

import json
import math
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.unit.openai.conftest import SCHEMA
from workflows.pipeline.engines import engine_name
from workflows.pipeline.engines.openai import OpenAIEngine, reset_provider_state, shared_engine
from workflows.pipeline.types import ModelRequest, ModelUnavailable, Timeouts
from workflows.vocab import CallOutcome, CallPurpose


@pytest.fixture
def engine(server, settings):
    settings.OPENAI_API_KEY = "sk-test"
    settings.OPENAI_BASE_URL = server.base_url
    settings.REVIEWDESK_LLM_MAX_RETRIES = 2
    server.reset()
    return OpenAIEngine(api_key="sk-test", base_url=server.base_url)


def request_for(model: str, user: str, *, schema=SCHEMA, total=5.0, purpose=CallPurpose.DRAFT) -> ModelRequest:
    return ModelRequest(model=model, system="You write courteous replies.", user=user, json_schema=schema,
                        temperature=0.2, max_tokens=300, timeouts=Timeouts(connect=1.0, total=total), purpose=purpose)


def test_engine_name_follows_the_api_key(settings):
    settings.OPENAI_API_KEY = ""
    assert engine_name() == "offline"
    settings.OPENAI_API_KEY = "sk-anything"
    assert engine_name() == "openai"


def test_a_reply_carries_content_logprobs_tokens_and_one_record(engine, server, model_name):
    reply = engine.complete(request_for(model_name, "Customer Ann wrote: broken parcel [[lane:async]]"))
    assert reply.engine == "openai"
    assert reply.model_requested == reply.model_reported == model_name
    assert json.loads(reply.content)["reply"].startswith("Dear Ann,")
    assert reply.finish_reason == "stop"
    assert reply.token_logprobs and all(t.logprob == pytest.approx(math.log(0.80)) for t in reply.token_logprobs)
    assert "".join(t.token for t in reply.token_logprobs) == reply.content
    (call,) = reply.calls
    assert call.outcome == CallOutcome.OK and call.ok
    assert call.purpose == CallPurpose.DRAFT and call.engine == "openai"
    assert call.http_status == 200
    assert call.model_requested == call.model_reported == model_name
    assert call.prompt_tokens > 0 and call.completion_tokens == len(reply.token_logprobs)
    assert call.latency_ms >= 0 and call.error == "" and call.dropped_parameters == ()


def test_the_request_carries_what_scoring_needs(engine, server, model_name):
    engine.complete(request_for(model_name, "carries-1"))
    (sent,) = server.calls_for("carries-1")
    assert sent["model"] == model_name
    assert sent["logprobs"] is True and sent["top_logprobs"] == 1
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 300
    assert sent["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "draft", "schema": SCHEMA, "strict": False}}
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert sent["messages"][0]["content"] == "You write courteous replies."


def test_text_requests_ask_for_no_response_format(engine, server, model_name):
    engine.complete(request_for(model_name, "text-1", schema=None))
    (sent,) = server.calls_for("text-1")
    assert "response_format" not in sent
    assert sent["logprobs"] is True


def test_the_model_the_server_reports_is_recorded_beside_the_one_asked_for(engine, model_name):
    reply = engine.complete(request_for(model_name, "[[reported:gpt-4o-mini-2024-07-18]]"))
    assert reply.model_requested == model_name
    assert reply.model_reported == reply.calls[0].model_reported == "gpt-4o-mini-2024-07-18"
    assert reply.calls[0].model_requested == model_name


def test_a_truncated_answer_keeps_finish_reason_length(engine, model_name):
    reply = engine.complete(request_for(model_name, "[[finish:length]] truncated-1"))
    assert reply.finish_reason == "length"
    assert reply.calls[0].outcome == CallOutcome.OK


def test_the_purpose_is_recorded_on_every_call(engine, model_name):
    reply = engine.complete(request_for(model_name, "purpose-1", purpose=CallPurpose.REPAIR))
    assert [c.purpose for c in reply.calls] == [CallPurpose.REPAIR]


def test_an_unreachable_server_raises_model_unavailable_with_a_record_per_request(settings, model_name):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.REVIEWDESK_LLM_MAX_RETRIES = 1
    engine = OpenAIEngine(api_key="sk-test", base_url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(ModelUnavailable) as info:
        engine.complete(request_for(model_name, "nobody listens", total=2.0))
    assert info.value.model == model_name and info.value.retryable
    assert [c.outcome for c in info.value.calls] == [CallOutcome.ERROR, CallOutcome.ERROR]
    assert all("APIConnectionError" in c.error and c.http_status is None for c in info.value.calls)
    reset_provider_state(engine.base_url)


def test_one_engine_per_process_whose_client_never_retries_by_itself(engine, server, settings):
    first = shared_engine()
    assert shared_engine() is first
    assert first.client.max_retries == 0
    settings.OPENAI_BASE_URL = server.base_url.replace("127.0.0.1", "localhost")
    assert shared_engine() is not first


def test_threads_share_one_engine(engine, server, model_name):
    # A Celery threads pool calls one engine from many threads at once.
    def draft(n: int):
        return engine.complete(request_for(model_name, f"Customer T{n} wrote: thread-{n}"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(draft, range(8)))
    assert all(json.loads(replies[n].content)["reply"].startswith(f"Dear T{n},") for n in range(8))
    assert all(len(server.calls_for(f"thread-{n}")) == 1 for n in range(8))


class _FixedAnswer:
    """A one-route HTTP server on loopback that answers every POST with one fixed 200 body."""

    def __init__(self, body: bytes):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_an_answer_that_is_not_json_is_a_recorded_error_per_request(settings, model_name):
    # The engine reads the raw answer itself (openai.py, _Answer): an unreadable body must still
    # be an error the retry loop records and the next model is tried after, never an exception
    # that escapes the run.
    fixed = _FixedAnswer(b"<html>gateway says hello</html>")
    settings.REVIEWDESK_LLM_MAX_RETRIES = 1
    engine = OpenAIEngine(api_key="sk-test", base_url=fixed.base_url)
    try:
        with pytest.raises(ModelUnavailable) as info:
            engine.complete(request_for(model_name, "garbage back", total=2.0))
    finally:
        fixed.close()
        reset_provider_state(engine.base_url)
    assert [c.outcome for c in info.value.calls] == [CallOutcome.ERROR, CallOutcome.ERROR]
    assert all("APIResponseValidationError" in c.error and "not JSON" in c.error for c in info.value.calls)


def test_a_bare_answer_without_usage_or_logprobs_reads_as_zeros(settings, model_name):
    body = {"id": "x", "object": "chat.completion", "model": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": None,
                         "logprobs": {"content": None}}]}
    fixed = _FixedAnswer(json.dumps(body).encode())
    engine = OpenAIEngine(api_key="sk-test", base_url=fixed.base_url)
    try:
        reply = engine.complete(request_for(model_name, "bare answer", schema=None))
    finally:
        fixed.close()
        reset_provider_state(engine.base_url)
    assert reply.content == "" and reply.finish_reason == "" and reply.token_logprobs is None
    assert reply.model_reported == model_name  # no model in the answer: the one asked for
    (call,) = reply.calls
    assert call.outcome == CallOutcome.OK and (call.prompt_tokens, call.completion_tokens, call.cached_tokens) == (0, 0, 0)
