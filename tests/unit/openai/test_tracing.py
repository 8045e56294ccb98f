"""OpenTelemetry traces of a draft (issue 9): one span per pipeline stage under one span for the
run, the GenAI semantic-convention attributes on the model calls, and nothing at all when
tracing is not configured. The SDK's in-memory exporter stands in for a collector; the model
is the loopback OpenAI-compatible server, reached through the real engine."""
from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.fake_openai import _user_message
from workflows.definitions import parse_definition
from workflows.pipeline import run, tracing
from workflows.pipeline.engines.openai import OpenAIEngine

VALUES = {"customer_name": "Ann Example", "customer_email": "ann@example.com", "channel": "email",
          "complaint": "My parcel arrived broken.", "order_value": "42.50", "refund_offered": True}


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_tracer_provider(None)


@pytest.fixture
def graded_spec(demo_data, model_name):
    """customer-reply with a grading call, on a model name of its own (its breaker is fresh)."""
    data = demo_data("customer-reply")
    data["model"]["name"] = model_name
    data["qa"] = {"model": model_name, "rubric": "The reply is polite."}
    return parse_definition(data)


def _engine(server, settings):
    settings.REVIEWDESK_LLM_MAX_RETRIES = 0
    server.reset()
    return OpenAIEngine(api_key="sk-test", base_url=server.base_url)


def test_a_draft_is_one_trace_with_a_span_per_stage_and_the_genai_attributes(spans, server, settings, graded_spec,
                                                                             model_name):
    result = run(graded_spec, dict(VALUES), engine=_engine(server, settings))
    assert not result.failed

    finished = spans.get_finished_spans()
    root = next(s for s in finished if s.name == "pipeline.run")
    assert root.parent is None
    assert {s.context.trace_id for s in finished} == {root.context.trace_id}  # one trace per draft
    names = {s.name for s in finished}
    assert {"pipeline.redact", "pipeline.render", "pipeline.call", "pipeline.restore", "pipeline.validate",
            "pipeline.score", "pipeline.qa", "pipeline.finish", "pipeline.agreement"} <= names
    by_id = {s.context.span_id: s for s in finished}
    for span in finished:  # every stage hangs under the run
        top = span
        while top.parent is not None:
            top = by_id[top.parent.span_id]
        assert top is root

    requests = server.requests
    assert len(requests) == 2  # the draft and its grading
    sent = [len(_user_message(r).split()) for r in requests]
    calls = sorted((s for s in finished if s.name == "pipeline.call"), key=lambda s: s.start_time)
    assert len(calls) == 2
    for span, prompt_tokens in zip(calls, sent, strict=True):
        attrs = span.attributes
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.request.model"] == attrs["gen_ai.response.model"] == model_name
        assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "openai"
        assert attrs["gen_ai.usage.input_tokens"] == prompt_tokens
        assert attrs["gen_ai.usage.output_tokens"] > 0
        [event] = span.events
        assert event.name == "gen_ai.request" and event.attributes["reviewdesk.outcome"] == "ok"
    run_attrs = root.attributes
    assert run_attrs["reviewdesk.workflow"] == "customer-reply"
    assert run_attrs["gen_ai.usage.input_tokens"] == sum(sent) == result.prompt_tokens
    assert run_attrs["gen_ai.usage.output_tokens"] == result.completion_tokens
    assert run_attrs["reviewdesk.score"] == pytest.approx(result.score)
    assert run_attrs["reviewdesk.calls"] == 2


def test_a_model_that_fails_marks_its_call_span_as_an_error(spans, server, settings, graded_spec):
    values = dict(VALUES, complaint="Broken parcel. [[status:503:5]]")
    result = run(graded_spec, values, engine=_engine(server, settings))
    assert result.failed
    [call] = [s for s in spans.get_finished_spans() if s.name == "pipeline.call"]
    assert call.status.status_code == StatusCode.ERROR
    root = next(s for s in spans.get_finished_spans() if s.name == "pipeline.run")
    assert root.attributes["error.type"] == "provider_unavailable"


def test_without_a_configured_tracer_nothing_is_traced(server, settings, graded_spec):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # exists, but was never handed to the pipeline
    assert not tracing.enabled()
    result = run(graded_spec, dict(VALUES), engine=_engine(server, settings))
    assert not result.failed and exporter.get_finished_spans() == ()
