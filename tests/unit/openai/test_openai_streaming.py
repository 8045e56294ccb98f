"""Streaming (issue 8): with a text sink on the request the engine asks for stream=True, writes
each piece to the sink as it arrives, and returns the same reply as without it: content,
finish reason, token logprobs (certainty) and usage (cost). Against the fake server's SSE."""
from __future__ import annotations

import dataclasses
import time

import pytest

from tests.unit.openai.conftest import SCHEMA
from tests.unit.openai.test_openai_engine import engine, request_for  # noqa: F401  (fixture)
from workflows.pipeline.engines.offline import OfflineEngine
from workflows.pipeline.types import ModelRequest, Timeouts
from workflows.vocab import CallOutcome


class Sink:
    def __init__(self):
        self.events: list[tuple[str, str, float]] = []

    def start(self):
        self.events.append(("start", "", time.monotonic()))

    def write(self, delta):
        self.events.append(("text", delta, time.monotonic()))

    @property
    def text(self) -> str:
        since_start = self.events[max(i for i, e in enumerate(self.events) if e[0] == "start"):]
        return "".join(delta for kind, delta, _ in since_start if kind == "text")


def _streamed(request, sink):
    return dataclasses.replace(request, text_sink=sink)


@pytest.mark.parametrize("schema", [SCHEMA, None], ids=["json", "text"])
def test_a_streamed_reply_equals_the_plain_one_and_the_sink_saw_it_grow(engine, server, model_name, schema):  # noqa: F811
    user = "Customer Ann wrote: broken parcel [[lane:async]] [[plain]] [[stream-delay:0.02]]"
    plain = engine.complete(request_for(model_name, user, schema=schema))
    sink = Sink()
    streamed = engine.complete(_streamed(request_for(model_name, user, schema=schema), sink))
    sent = server.requests[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert "stream" not in server.requests[-2]
    # The same answer, the same certainty, the same cost.
    assert streamed.content == plain.content and streamed.finish_reason == plain.finish_reason == "stop"
    assert streamed.token_logprobs == plain.token_logprobs and streamed.token_logprobs
    (call,), (plain_call,) = streamed.calls, plain.calls
    assert call.outcome == CallOutcome.OK and call.http_status == 200
    assert (call.prompt_tokens, call.completion_tokens) == (plain_call.prompt_tokens, plain_call.completion_tokens)
    assert call.completion_tokens > 0
    # The sink got the text piece by piece, over time, and the pieces make the answer.
    pieces = [e for e in sink.events if e[0] == "text"]
    assert sink.events[0][0] == "start" and len(pieces) >= 5
    assert sink.text == streamed.content
    assert pieces[-1][2] - pieces[0][2] >= 0.05, "the pieces arrived as the model wrote them"


def test_a_streamed_reply_cut_at_max_tokens_says_so(engine, server, model_name):  # noqa: F811
    reply = engine.complete(_streamed(request_for(model_name, "Customer Ann wrote [[finish:length]] [[plain]]",
                                                  schema=None), Sink()))
    assert reply.finish_reason == "length"


def test_a_retried_stream_starts_the_sink_over(engine, server, model_name):  # noqa: F811
    sink = Sink()
    reply = engine.complete(_streamed(request_for(model_name, "Customer Ann wrote [[status:500:1]] [[plain]]",
                                                  schema=None), sink))
    assert [c.outcome for c in reply.calls] == [CallOutcome.ERROR, CallOutcome.OK]
    assert sink.text == reply.content


def test_a_server_that_refuses_streaming_is_asked_plainly(engine, server, model_name):  # noqa: F811
    sink = Sink()
    reply = engine.complete(_streamed(request_for(model_name, "Customer Ann wrote [[plain]] [[profile:no-stream]]",
                                                  schema=None), sink))
    assert reply.content.startswith("Dear Ann")
    assert [c.outcome for c in reply.calls] == [CallOutcome.REFUSED_PARAMETER, CallOutcome.OK]
    assert sink.events == [], "nothing was streamed: the page polls"


def test_the_offline_engine_writes_its_draft_in_pieces_only_when_watched():
    request = ModelRequest(model="offline", system="", user="Customer Ann wrote", json_schema=None, temperature=0,
                           max_tokens=100, timeouts=Timeouts(1, 5), values={"customer_name": "Ann", "complaint":
                           "The parcel arrived broken and nobody answered my two e-mails about it."},
                           field_names=("customer_name", "complaint"))
    started = time.monotonic()
    plain = OfflineEngine().complete(request)
    assert time.monotonic() - started < 0.05, "no delay when nobody watches"
    sink = Sink()
    watched = OfflineEngine().complete(dataclasses.replace(request, text_sink=sink))
    assert watched.content == plain.content
    pieces = [e for e in sink.events if e[0] == "text"]
    assert len(pieces) >= 3 and sink.text == watched.content
    assert pieces[-1][2] > pieces[0][2]
