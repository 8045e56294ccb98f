"""Partial OpenAI-compatible servers: refused parameters are dropped one step at a time,
remembered per provider and model for every worker, and recorded on each call. The fake
server's compatibility profiles play llama.cpp, vLLM-, Ollama- and Azure-like servers.
"""
from __future__ import annotations

import json
import math
import time

import httpx
import pytest

from tests.fake_openai import GRAMMAR_FORCED_LOGPROB, json_tokens
from tests.unit.openai.conftest import SCHEMA
from workflows.pipeline.engines import compat
from workflows.pipeline.engines.openai import OpenAIEngine
from workflows.pipeline.types import ModelRequest, ModelUnavailable, Timeouts
from workflows.vocab import CallOutcome

OK, REFUSED, ERROR = CallOutcome.OK, CallOutcome.REFUSED_PARAMETER, CallOutcome.ERROR
@pytest.fixture
def engine(server, settings):
    settings.OPENAI_API_KEY = "sk-test"
    settings.OPENAI_BASE_URL = server.base_url
    settings.REVIEWDESK_LLM_MAX_RETRIES = 2
    settings.REVIEWDESK_LLM_RETRY_WAIT_CAP = 1.0
    settings.REVIEWDESK_LLM_PARAMETER_MEMORY_SECONDS = 3600
    server.reset()
    return OpenAIEngine(api_key="sk-test", base_url=server.base_url)


def request_for(model: str, user: str, *, schema=SCHEMA) -> ModelRequest:
    return ModelRequest(model=model, system="You write courteous replies.", user=f"Customer Ann wrote: {user}",
                        json_schema=schema, temperature=0.2, max_tokens=300, timeouts=Timeouts(connect=1.0, total=5.0))


def outcomes(calls) -> list:
    return [c.outcome for c in calls]


def response_format_of(sent: dict) -> str | None:
    return (sent.get("response_format") or {}).get("type")


# --- response_format ------------------------------------------------------------------------


def test_a_json_schema_500_degrades_to_json_object_and_every_worker_remembers(engine, server, model_name):
    reply = engine.complete(request_for(model_name, "[[profile:llamacpp-no-json-schema]] c-1"))
    assert outcomes(reply.calls) == [REFUSED, OK]
    refused, answered = reply.calls
    assert refused.http_status == 500 and refused.error.startswith("refused json_schema")
    assert refused.dropped_parameters == ()
    assert answered.dropped_parameters == ("json_schema",)
    first, second = server.calls_for("c-1")
    assert response_format_of(first) == "json_schema" and response_format_of(second) == "json_object"
    # json_object carries no schema: the prompt does (and says "JSON", which OpenAI's
    # json_object mode insists on).
    system = second["messages"][0]["content"]
    assert system.startswith("You write courteous replies.\n\n")
    assert json.dumps(SCHEMA) in system
    assert json.loads(reply.content)["tone"] == "apologetic"

    # Another worker (another engine, nothing in common but Redis) starts at json_object.
    other_worker = OpenAIEngine(api_key="sk-test", base_url=server.base_url)
    again = other_worker.complete(request_for(model_name, "[[profile:llamacpp-no-json-schema]] c-1b"))
    assert outcomes(again.calls) == [OK]
    assert again.calls[0].dropped_parameters == ("json_schema",)
    (sent,) = server.calls_for("c-1b")
    assert response_format_of(sent) == "json_object"


def test_a_refused_json_object_falls_back_to_the_schema_in_the_prompt(engine, server, model_name):
    reply = engine.complete(request_for(model_name, "[[profile:no-response-format]] c-2"))
    assert outcomes(reply.calls) == [REFUSED, REFUSED, OK]
    assert [c.http_status for c in reply.calls] == [400, 400, 200]
    assert reply.calls[-1].dropped_parameters == ("json_schema", "json_object")
    sent = server.calls_for("c-2")
    assert [response_format_of(s) for s in sent] == ["json_schema", "json_object", None]
    system = sent[-1]["messages"][0]["content"]
    assert "single JSON object" in system and json.dumps(SCHEMA) in system
    assert system.index('"tone"') < system.index('"reply"')  # the author's property order

    engine.complete(request_for(model_name, "[[profile:no-response-format]] c-2b"))
    (sent,) = server.calls_for("c-2b")
    assert "response_format" not in sent


def test_refusals_spend_no_retry(engine, server, settings, model_name):
    settings.REVIEWDESK_LLM_MAX_RETRIES = 0
    reply = engine.complete(request_for(model_name, "[[profile:no-response-format]] [[profile:no-logprobs]] c-3"))
    assert outcomes(reply.calls) == [REFUSED, REFUSED, REFUSED, OK]
    assert reply.calls[-1].dropped_parameters == ("json_schema", "json_object", "top_logprobs", "logprobs")
    assert reply.token_logprobs is None


def test_a_server_answering_500_to_everything_is_not_degraded_for_free(engine, server, model_name):
    # Only the first unexplained 500 gets the benefit of the doubt; then each one spends a try.
    with pytest.raises(ModelUnavailable) as info:
        engine.complete(request_for(model_name, "[[status:500:99]] c-4"))
    assert outcomes(info.value.calls) == [REFUSED, REFUSED, ERROR, ERROR]
    assert len(server.calls_for("c-4")) == 4  # retries + 2, never more
    # Nothing succeeded without json_schema, so nothing is remembered.
    assert compat.remembered(compat_provider(server), model_name, wants_json=True).dropped == frozenset()


def test_a_passing_500_on_a_json_request_costs_one_refusal_and_answers(engine, server, model_name):
    reply = engine.complete(request_for(model_name, "[[status:500:1]] c-5"))
    assert outcomes(reply.calls) == [REFUSED, OK]


def test_a_client_error_naming_no_parameter_is_not_a_refusal(engine, server, model_name):
    with pytest.raises(ModelUnavailable) as info:
        engine.complete(request_for(model_name, "[[status:400:99]] c-6"))
    assert outcomes(info.value.calls) == [CallOutcome.CLIENT_ERROR]
    assert not info.value.retryable


# --- logprobs ------------------------------------------------------------------------------


def test_top_logprobs_is_sent_so_servers_that_need_it_return_logprobs(engine, server, model_name):
    reply = engine.complete(request_for(model_name, "[[profile:no-logprobs-unless-top]] [[lane:async]] c-7"))
    assert outcomes(reply.calls) == [OK]
    assert reply.token_logprobs and reply.token_logprobs[5].logprob == pytest.approx(math.log(0.80))
    (sent,) = server.calls_for("c-7")
    assert sent["logprobs"] is True and sent["top_logprobs"] == 1

    # What the profile does to a client that asks for logprobs alone:
    bare = httpx.post(f"{server.base_url}/chat/completions", json={
        "model": model_name, "logprobs": True, "messages": [{"role": "user", "content": "[[profile:no-logprobs-unless-top]]"}]})
    assert bare.json()["choices"][0]["logprobs"] is None


def test_refused_logprobs_are_dropped_and_the_reply_has_none(engine, server, model_name):
    reply = engine.complete(request_for(model_name, "[[profile:no-logprobs]] c-8", schema=None))
    assert outcomes(reply.calls) == [REFUSED, OK]
    assert reply.calls[0].error.startswith("refused logprobs") and reply.calls[0].http_status == 400
    assert reply.calls[1].dropped_parameters == ("top_logprobs", "logprobs")
    assert reply.token_logprobs is None  # the lead scores with what is left
    second = server.calls_for("c-8")[1]
    assert "logprobs" not in second and "top_logprobs" not in second

    engine.complete(request_for(model_name, "[[profile:no-logprobs]] c-8b"))
    (sent,) = server.calls_for("c-8b")
    assert "logprobs" not in sent
    assert response_format_of(sent) == "json_schema"  # only what was refused is left out


def test_grammar_constrained_logprobs_make_structure_look_certain(engine, server, model_name):
    reply = engine.complete(request_for(model_name, "[[profile:grammar-logprobs]] [[lane:blocking]] c-9"))
    structure = {t.token for t in reply.token_logprobs if t.logprob == GRAMMAR_FORCED_LOGPROB}
    assert {"{", '"', "reply", '": ', ", ", "tone", "}"} <= structure
    words = [t for t in reply.token_logprobs if t.logprob != GRAMMAR_FORCED_LOGPROB]
    assert words and all(t.logprob == pytest.approx(math.log(0.30)) for t in words)
    assert "".join(t.token for t in reply.token_logprobs) == reply.content


def test_the_llamacpp_profile_end_to_end(engine, server, model_name):
    reply = engine.complete(request_for(model_name, "[[profile:llamacpp]] c-10"))
    assert outcomes(reply.calls) == [REFUSED, OK]
    assert reply.calls[-1].dropped_parameters == ("json_schema",)
    assert reply.token_logprobs is not None  # top_logprobs was sent
    assert any(t.logprob == GRAMMAR_FORCED_LOGPROB for t in reply.token_logprobs)


# --- other parameters ----------------------------------------------------------------------


def test_max_tokens_becomes_max_completion_tokens_when_the_model_asks(engine, server, model_name):
    reply = engine.complete(request_for(model_name, "[[profile:max-completion-tokens]] c-11"))
    assert outcomes(reply.calls) == [REFUSED, OK]
    assert reply.calls[-1].dropped_parameters == ("max_tokens",)
    second = server.calls_for("c-11")[1]
    assert second["max_completion_tokens"] == 300 and "max_tokens" not in second


# --- memory ---------------------------------------------------------------------------------


def compat_provider(server) -> str:
    from workflows.pipeline.engines.breaker import provider_of

    return provider_of(server.base_url)


def test_memory_is_per_model_and_expires(engine, server, settings, model_name):
    settings.REVIEWDESK_LLM_PARAMETER_MEMORY_SECONDS = 1
    engine.complete(request_for(model_name, "[[profile:no-logprobs]] c-12"))
    assert compat.remembered(compat_provider(server), model_name, wants_json=True).dropped == {"top_logprobs", "logprobs"}
    assert compat.remembered(compat_provider(server), f"{model_name}-other", wants_json=True).dropped == frozenset()
    time.sleep(1.2)
    reply = engine.complete(request_for(model_name, "c-12b"))
    (sent,) = server.calls_for("c-12b")
    assert sent["logprobs"] is True and reply.calls[0].dropped_parameters == ()


def test_zero_memory_seconds_remembers_nothing(engine, server, settings, model_name):
    settings.REVIEWDESK_LLM_PARAMETER_MEMORY_SECONDS = 0
    engine.complete(request_for(model_name, "[[profile:no-logprobs]] c-13"))
    assert compat.remembered(compat_provider(server), model_name, wants_json=True).dropped == frozenset()


def test_a_text_request_does_not_list_response_format_as_dropped(engine, server, model_name):
    engine.complete(request_for(model_name, "[[profile:llamacpp-no-json-schema]] c-14"))
    reply = engine.complete(request_for(model_name, "c-14b", schema=None))
    assert reply.calls[0].dropped_parameters == ()


# --- the rules, without a server ------------------------------------------------------------


@pytest.mark.parametrize("status, message, expected", [
    (400, "This model's maximum context length is 8192 tokens", None),
    (400, "Invalid 'messages[0].content': string too long", None),
    (503, "overloaded", None),
    (429, "logprobs rate limit", None),
    (400, "logprobs is not supported with this model.", ("logprobs", True)),  # top_logprobs goes with it
    (422, "top_logprobs must be at most 0", ("top_logprobs", True)),
    (400, "Invalid schema for response_format 'draft'", ("json_schema", True)),
    (500, "[json.exception.type_error.302] type must be string", ("json_schema", False)),
    (400, "Unsupported value: 'temperature' does not support 0.2 with this model.", ("temperature", True)),
    (400, "Use 'max_completion_tokens' instead.", ("max_tokens", True)),
])
def test_which_answers_are_refusals(status, message, expected):
    assert compat.refusal(compat.Params(wants_json=True), status, message) == expected


def test_an_unexplained_500_to_a_text_request_is_not_a_refusal():
    assert compat.refusal(compat.Params(wants_json=False), 500, "Internal server error") is None


def test_each_step_down_the_response_format_ladder():
    params = compat.Params(wants_json=True)
    assert (params.response_format, params.schema_in_prompt) == ("json_schema", False)
    params = params.without("json_schema")
    assert (params.response_format, params.schema_in_prompt) == ("json_object", True)
    params = params.without("json_object")
    assert (params.response_format, params.schema_in_prompt) == (None, True)
    assert params.recorded() == ("json_schema", "json_object")


def test_the_fake_splits_tokens_by_field():
    tokens = json_tokens({"reply": "Dear Ann, thanks.", "tone": "neutral", "n": 3})
    assert "".join(t for t, _ in tokens) == '{"reply": "Dear Ann, thanks.", "tone": "neutral", "n": 3}'
    assert [t for t, f in tokens if f == "reply"] == ["Dear", " Ann", ",", " thanks", "."]
    assert [t for t, f in tokens if f == "tone"] == ["neutral"]
    assert [t for t, f in tokens if f == "n"] == ["3"]


@pytest.mark.services
def test_without_redis_refusals_are_remembered_in_process_memory(engine, server, settings, model_name):
    import os

    import redis as redis_lib

    settings.REDIS_URL = ""
    engine.complete(request_for(model_name, "[[profile:no-logprobs]] c-15"))
    assert compat.remembered(compat_provider(server), model_name, wants_json=True).dropped == {"top_logprobs", "logprobs"}
    assert not redis_lib.Redis.from_url(os.environ["REDIS_URL"]).keys(f"*{model_name}*")
    compat.forget_provider(compat_provider(server))
    assert compat.remembered(compat_provider(server), model_name, wants_json=True).dropped == frozenset()


def test_a_guessed_refusal_is_remembered_for_minutes_a_named_one_for_the_memory_time(engine, server, model_name):
    from workflows.pipeline.engines.breaker import shared_redis

    engine.complete(request_for(model_name, "[[profile:llamacpp-no-json-schema]] c-guess"))
    key = compat._key(compat_provider(server), model_name)
    assert 0 < shared_redis().ttl(key) <= compat.GUESSED_MEMORY_SECONDS
    other = f"{model_name}-named"
    engine.complete(request_for(other, "[[profile:no-response-format]] c-named"))
    assert shared_redis().ttl(compat._key(compat_provider(server), other)) > compat.GUESSED_MEMORY_SECONDS

