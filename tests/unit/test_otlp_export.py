"""With OTEL_EXPORTER_OTLP_ENDPOINT set, a process sends its drafts' traces over OTLP/HTTP
(issue 9). The collector is a loopback HTTP server that decodes what it receives with the
OpenTelemetry protobuf definitions; nothing leaves the machine."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from werkzeug import Response

ROOT = Path(__file__).resolve().parents[2]

DRAFT_IN_A_NEW_PROCESS = """
import django
django.setup()
from opentelemetry import trace
from reviewdesk.observability import configure_tracing
from workflows.definitions import parse_yaml
from workflows.pipeline import run
from workflows.pipeline.engines.offline import OfflineEngine

assert configure_tracing()
spec = parse_yaml(open("workflows/demo_workflows/customer-reply.yaml").read())
values = {"customer_name": "Ann Example", "channel": "email", "complaint": "My parcel arrived broken."}
result = run(spec, values, engine=OfflineEngine())
assert not result.failed
trace.get_tracer_provider().shutdown()  # sends what the batch still holds
print("sent")
"""


def test_a_configured_endpoint_receives_the_trace_of_a_draft(httpserver):
    received: list[ExportTraceServiceRequest] = []

    def collect(request):
        message = ExportTraceServiceRequest()
        message.ParseFromString(request.get_data())
        received.append(message)
        return Response(b"", status=200, content_type="application/x-protobuf")

    httpserver.expect_request("/v1/traces", method="POST").respond_with_handler(collect)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "OTEL_", "DATABASE_URL", "REDIS_URL", "OPENAI_"))}
    env.update(DJANGO_SETTINGS_MODULE="reviewdesk.settings", DJANGO_DEBUG="true",
               OTEL_EXPORTER_OTLP_ENDPOINT=httpserver.url_for("/").rstrip("/"), OTEL_SERVICE_NAME="reviewdesk-test")
    done = subprocess.run([sys.executable, "-c", DRAFT_IN_A_NEW_PROCESS], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "sent" in done.stdout, done.stderr[-3000:]

    assert received, "no OTLP request reached the collector"
    spans, services = [], set()
    for message in received:
        for resource_spans in message.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                spans.extend(scope_spans.spans)
    assert services == {"reviewdesk-test"}
    names = {span.name for span in spans}
    assert {"pipeline.run", "pipeline.redact", "pipeline.render", "pipeline.call", "pipeline.score"} <= names
    call = next(span for span in spans if span.name == "pipeline.call")
    attributes = {a.key: a.value for a in call.attributes}
    assert attributes["gen_ai.provider.name"].string_value == "offline"
    assert attributes["gen_ai.request.model"].string_value == "gpt-4o-mini"
    assert attributes["gen_ai.usage.input_tokens"].int_value > 0
    assert len({span.trace_id for span in spans}) == 1
