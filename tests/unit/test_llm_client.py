"""The openai client against the fake OpenAI-compatible server on loopback."""
from __future__ import annotations

import json
import math

import pytest

from workflows.definitions import parse_definition
from workflows.llm import client
from workflows.llm.prompts import render_prompt
from workflows.llm.types import EngineError


def _prompt(spec, values, marker=""):
    values = {**values, "complaint": f"{values['complaint']} {marker}".strip()}
    return render_prompt(spec, values)


def test_engine_name_follows_the_api_key(settings):
    settings.OPENAI_API_KEY = ""
    assert client.engine_name() == "offline"
    settings.OPENAI_API_KEY = "sk-anything"
    assert client.engine_name() == "openai"


def test_a_call_returns_content_logprobs_and_tokens(fake_model, demo_spec, customer_reply_input):
    spec = demo_spec()
    completion = client.complete(spec, _prompt(spec, customer_reply_input, "[[lane:async]] call-1"))
    assert completion.engine == "openai"
    assert completion.model == "gpt-4o-mini"
    assert json.loads(completion.content)["tone"] == "apologetic"
    assert completion.token_logprobs and all(lp == pytest.approx(math.log(0.80)) for lp in completion.token_logprobs)
    assert completion.completion_tokens == len(completion.token_logprobs)
    assert completion.prompt_tokens > 0
    assert completion.failures == []
    assert completion.latency_ms >= 0


def test_the_request_carries_what_scoring_needs(fake_model, demo_spec, customer_reply_input):
    spec = demo_spec()
    client.complete(spec, _prompt(spec, customer_reply_input, "call-2"))
    (request,) = fake_model.calls_for("call-2")
    assert request["model"] == "gpt-4o-mini"
    assert request["logprobs"] is True
    assert request["temperature"] == spec.model.temperature
    assert request["max_tokens"] == spec.model.max_tokens
    assert request["response_format"]["json_schema"]["schema"] == spec.output.json_schema
    roles = [m["role"] for m in request["messages"]]
    assert roles == ["system", "user"]
    assert request["messages"][0]["content"].startswith("You write courteous, accurate replies")


def test_text_outputs_ask_for_no_response_format(fake_model, demo_data, customer_reply_input):
    data = demo_data()
    data["output"] = {"format": "text"}
    spec = parse_definition(data)
    client.complete(spec, _prompt(spec, customer_reply_input, "call-3"))
    (request,) = fake_model.calls_for("call-3")
    assert "response_format" not in request


def test_fallback_model_is_used_when_the_primary_is_down(fake_model, demo_spec, customer_reply_input):
    spec = demo_spec()
    completion = client.complete(spec, _prompt(spec, customer_reply_input, "[[down:gpt-4o-mini]] call-4"))
    assert completion.model == "gpt-4o"
    assert json.loads(completion.content)["reply"]
    (failure,) = completion.failures
    assert failure.model == "gpt-4o-mini"
    error = str(failure)
    assert error.startswith("gpt-4o-mini: ")
    assert "503" in error or "InternalServerError" in error
    assert [r["model"] for r in fake_model.calls_for("call-4")] == ["gpt-4o-mini", "gpt-4o"]


def test_every_model_down_raises_engine_error_naming_each(fake_model, demo_spec, customer_reply_input):
    spec = demo_spec()
    prompt = _prompt(spec, customer_reply_input, "[[down:gpt-4o-mini]] [[down:gpt-4o]] call-5")
    with pytest.raises(EngineError) as info:
        client.complete(spec, prompt)
    assert [f.model for f in info.value.failures] == ["gpt-4o-mini", "gpt-4o"]
    message = str(info.value)
    assert "gpt-4o-mini: " in message and "; gpt-4o: " in message
    assert len(fake_model.calls_for("call-5")) == 2


def test_no_fallback_configured_fails_with_the_primary_named(fake_model, demo_spec, customer_reply_input):
    spec = demo_spec("underwriting-memo")  # no fallback list
    values = {"business_name": "Bakery", "sector": "retail", "years_trading": 3, "loan_amount": 1,
              "annual_revenue": 2, "notes": "[[down:gpt-4o-mini]] call-6"}
    with pytest.raises(EngineError, match=r"^gpt-4o-mini: "):
        client.complete(spec, render_prompt(spec, values))
    assert len(fake_model.calls_for("call-6")) == 1


def test_default_model_is_used_when_the_definition_names_none(fake_model, settings, demo_data, customer_reply_input):
    settings.REVIEWDESK_DEFAULT_MODEL = "gpt-4.1-nano"
    data = demo_data()
    del data["model"]["name"]
    spec = parse_definition(data)
    completion = client.complete(spec, _prompt(spec, customer_reply_input, "call-7"))
    assert completion.model == "gpt-4.1-nano"
    assert [r["model"] for r in fake_model.calls_for("call-7")] == ["gpt-4.1-nano"]


def test_unreachable_server_raises_engine_error(settings, demo_spec, customer_reply_input):
    # A port nobody listens on: a connection error is an OpenAIError too, not a crash.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.OPENAI_API_KEY = "sk-test"
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{port}/v1"
    settings.REVIEWDESK_LLM_MAX_RETRIES = 0
    settings.REVIEWDESK_LLM_TIMEOUT = 2
    spec = demo_spec()
    with pytest.raises(EngineError, match="APIConnectionError"):
        client.complete(spec, _prompt(spec, customer_reply_input))
