"""Issue 9's deployment files and log formats: the monitoring profile parses and wires
Prometheus to /metrics with the token, the Grafana dashboard only queries metrics /metrics
really exposes, and the two log formats carry the request id."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from reviewdesk.logs import PLAIN_FORMAT, json_formatter
from reviewdesk.observability import RequestIdFilter
from workflows.request_context import request_id_var

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "reviewdesk.json"
METRIC_NAME = re.compile(r"\b((?:reviewdesk|django)_[a-z0-9_]+)")


def test_compose_has_an_optional_monitoring_profile_wired_to_the_token():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], f"{name} must only start with --profile monitoring"
    for name in ("web", "worker", "beat", "postgres", "redis"):
        assert "profiles" not in services[name], f"{name} must start without a profile"
    # Every file the monitoring services mount is in the repository.
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    # The token reaches Prometheus as a file, and Prometheus sends that file as a bearer token.
    [mounted] = services["prometheus"]["configs"]
    assert compose["configs"][mounted["source"]]["content"].startswith("${REVIEWDESK_METRICS_TOKEN")
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["web:8000"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": mounted["target"]}
    # Django must accept the Host header Prometheus sends (the service name).
    assert "web" in services["web"]["environment"]["DJANGO_ALLOWED_HOSTS"].split(":-")[1].rstrip("}").split(",")
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in datasource["datasources"]}
    dashboard = json.loads(DASHBOARD.read_text())
    assert {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]} <= uids


def _dashboard_metric_names() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)}


def test_the_dashboard_queries_only_metrics_that_metrics_exposes(demo, client, settings):
    from tests.conftest import CUSTOMER_REPLY_INPUT
    from tests.integration.conftest import drafted, submit

    settings.DEBUG, settings.REVIEWDESK_METRICS_TOKEN = True, ""
    drafted(submit(demo, dict(CUSTOMER_REPLY_INPUT)))  # so that every family has samples
    client.get("/healthz")  # and django-prometheus has seen a request
    body = client.get("/metrics").content.decode()
    exposed = {sample.name for family in text_string_to_metric_families(body) for sample in family.samples}
    wanted = _dashboard_metric_names()
    assert {"reviewdesk_drafts_total", "reviewdesk_llm_call_duration_seconds_bucket", "reviewdesk_llm_tokens_total",
            "reviewdesk_llm_cost_usd_total", "reviewdesk_circuit_breaker_state", "reviewdesk_queue_depth",
            "reviewdesk_review_oldest_open_seconds", "reviewdesk_submissions"} <= wanted
    assert wanted - exposed == set()


# --- log formats ---------------------------------------------------------------------------


def _log_through(formatter: logging.Formatter, message: str, **extra) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("reviewdesk.tests.formats")
    logger.addHandler(handler)
    logger.propagate = False
    token = request_id_var.set("req-format-test")
    try:
        logger.warning(message, 42, extra=extra)
    finally:
        request_id_var.reset(token)
        logger.removeHandler(handler)
    return stream.getvalue()


def test_json_lines_carry_the_request_id_and_the_facts_as_keys():
    line = _log_through(json_formatter(), "model call %s", model="gpt-4o-mini", prompt_tokens=12)
    record = json.loads(line)
    assert record["event"] == "model call 42"
    assert (record["request_id"], record["model"], record["prompt_tokens"]) == ("req-format-test", "gpt-4o-mini", 12)
    assert (record["level"], record["logger"]) == ("warning", "reviewdesk.tests.formats")


def test_plain_lines_stay_readable_with_the_request_id():
    line = _log_through(logging.Formatter(PLAIN_FORMAT), "model call %s", model="gpt-4o-mini")
    assert " WARNING [req-format-test] reviewdesk.tests.formats model call 42" in line


def _settings_in_a_new_process(**environ) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "REVIEWDESK_LOG"))}
    env.update(environ, DJANGO_SETTINGS_MODULE="reviewdesk.settings")
    code = ("import django; django.setup(); from django.conf import settings; "
            "print(settings.LOGGING['handlers']['console']['formatter'])")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("environ, expected", [
    ({"DJANGO_DEBUG": "true"}, "plain"),
    ({"DJANGO_DEBUG": "true", "REVIEWDESK_LOG_FORMAT": "json"}, "json"),
    ({"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "k" * 50, "DJANGO_ALLOWED_HOSTS": "x.example"}, "json"),
])
def test_production_logs_json_and_development_plain_lines(environ, expected):
    proc = _settings_in_a_new_process(**environ)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == expected


@pytest.mark.parametrize("environ, message", [
    ({"REVIEWDESK_LOG_FORMAT": "xml"}, "REVIEWDESK_LOG_FORMAT='xml' must be plain or json"),
    ({"REVIEWDESK_METRICS_TOKEN": "short"}, "REVIEWDESK_METRICS_TOKEN must be at least 16 characters"),
])
def test_a_bad_observability_setting_stops_the_process(environ, message):
    proc = _settings_in_a_new_process(DJANGO_DEBUG="true", **environ)
    assert proc.returncode != 0 and message in proc.stderr
