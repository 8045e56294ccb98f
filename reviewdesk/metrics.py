"""``GET /metrics`` for Prometheus: django-prometheus's own metrics plus ReviewDesk's.

ReviewDesk's metrics are derived from the database (and Redis) at scrape time by a custom
collector, not counted in process memory (docs/ARCHITECTURE.md, "Metrics, logs and traces"):

- the drafts, model calls, tokens and costs are already rows (Draft, LLMCall) written in the same
  transaction as the state change, so the database is the source of truth; a counter in a Celery
  worker's memory would be invisible to the web process that Prometheus scrapes, lost whenever
  the worker restarts, and split across every worker process and machine;
- prometheus_client's multiprocess mode would fix the first point for one machine only (it
  shares files in one directory) and not the others.

The price is a few aggregate queries per scrape (one per metric family, each one index or
sequential scan); Prometheus scrapes every 15-60 s, and ``make bench`` style figures are in the
docs. Counters therefore never reset on a restart; they only drop when the retention purge
deletes rows, which Prometheus reads as a counter reset (``rate()`` copes with it).

Access: a bearer token (REVIEWDESK_METRICS_TOKEN). In production without a token the endpoint
answers 404, as if it did not exist; with a token configured, a request without the right one
gets 401. With DJANGO_DEBUG=true and no token it is open, for `curl localhost:8000/metrics`
during development (the development server listens on loopback only).
"""
from __future__ import annotations

import hmac
import logging
import time

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db.models import Count, Min, Q, Sum
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Seconds; a model call takes from a fraction of a second to the timeout (30 s by default).
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
# Circuit breaker states as gauge values: a graph shows open circuits as peaks.
BREAKER_VALUES = {"closed": 0, "half-open": 1, "open": 2}
# kombu's Redis transport keeps one list per priority step: the queue's own name for priority 0
# and <name>\x06\x16<step> for the others (kombu.transport.redis, default steps 0, 3, 6, 9).
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)

WORKFLOW = "submission__workflow_version__workflow__slug"


class ReviewDeskCollector(Collector):
    """Every ReviewDesk metric, read from PostgreSQL and Redis when Prometheus scrapes."""

    def collect(self):
        up = GaugeMetricFamily("reviewdesk_metrics_source_up",
                               "1 when the source could be read for this scrape, 0 when it failed.", labels=["source"])
        started = time.monotonic()
        try:
            families = list(self._from_database())
        except Exception:  # a database outage must leave the rest of the scrape (and up=0) readable
            log.warning("metrics: database unavailable", exc_info=True)
            families, models = [], []
            up.add_metric(["database"], 0)
        else:
            up.add_metric(["database"], 1)
            models = self._models
        yield from families
        try:
            yield from self._from_redis(models)
        except Exception:
            log.warning("metrics: Redis unavailable", exc_info=True)
            up.add_metric(["redis"], 0)
        else:
            up.add_metric(["redis"], 1 if settings.REDIS_URL else 0)
        yield up
        yield GaugeMetricFamily("reviewdesk_metrics_collect_seconds", "Time spent collecting ReviewDesk metrics.",
                                value=time.monotonic() - started)

    # --- database ------------------------------------------------------------------------

    def _from_database(self):
        from workflows.models import Draft, LLMCall, ReviewTask, Submission

        drafts = CounterMetricFamily("reviewdesk_drafts", "Drafts recorded, by workflow and routing lane.",
                                     labels=["workflow", "lane"])
        for row in Draft.objects.values(WORKFLOW, "lane").annotate(n=Count("id")).order_by():
            drafts.add_metric([row[WORKFLOW], row["lane"]], row["n"])
        yield drafts

        tokens = CounterMetricFamily("reviewdesk_llm_tokens", "Tokens sent to and received from models, by model "
                                     "asked for and type (prompt, completion, cached_prompt).", labels=["model", "type"])
        cost = CounterMetricFamily("reviewdesk_llm_cost_usd", "Cost of model calls in USD (price table at call time), "
                                   "by workflow and model asked for.", labels=["workflow", "model"])
        by_model: dict[str, list[int]] = {}
        rows = (LLMCall.objects.values(WORKFLOW, "model").order_by()
                .annotate(cost=Sum("cost_usd"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"),
                          cached=Sum("cached_tokens")))
        for row in rows:
            cost.add_metric([row[WORKFLOW], row["model"]], float(row["cost"] or 0))
            sums = by_model.setdefault(row["model"], [0, 0, 0])
            for i, key in enumerate(("prompt", "completion", "cached")):
                sums[i] += row[key] or 0
        for model, (prompt, completion, cached) in sorted(by_model.items()):
            tokens.add_metric([model, "prompt"], prompt)
            tokens.add_metric([model, "completion"], completion)
            tokens.add_metric([model, "cached_prompt"], cached)
        self._models = sorted(by_model)
        yield tokens
        yield cost

        latency = HistogramMetricFamily("reviewdesk_llm_call_duration_seconds", "Model call latency (one HTTP request "
                                        "each), by model asked for and outcome.", labels=["model", "outcome"])
        buckets = {f"le{i}": Count("id", filter=Q(latency_ms__lte=int(b * 1000))) for i, b in enumerate(LATENCY_BUCKETS)}
        for row in (LLMCall.objects.values("model", "outcome").order_by()
                    .annotate(n=Count("id"), ms=Sum("latency_ms"), **buckets)):
            counts = [(_le(b), row[f"le{i}"]) for i, b in enumerate(LATENCY_BUCKETS)] + [("+Inf", row["n"])]
            latency.add_metric([row["model"], row["outcome"]], counts, (row["ms"] or 0) / 1000)
        yield latency

        submissions = GaugeMetricFamily("reviewdesk_submissions", "Submissions now in each state, by workflow.",
                                        labels=["workflow", "state"])
        workflow = "workflow_version__workflow__slug"
        for row in Submission.objects.values(workflow, "state").annotate(n=Count("id")).order_by():
            submissions.add_metric([row[workflow], row["state"]], row["n"])
        yield submissions

        from workflows.models import Lane

        open_tasks = {row["lane"]: row for row in
                      ReviewTask.objects.open().values("lane").annotate(n=Count("id"), oldest=Min("created_at")).order_by()}
        now = timezone.now()
        age = GaugeMetricFamily("reviewdesk_review_oldest_open_seconds", "Age of the oldest open review task per "
                                "lane (0 when none is open).", labels=["lane"])
        count = GaugeMetricFamily("reviewdesk_review_open_tasks", "Open review tasks per lane.", labels=["lane"])
        for lane in Lane.values:
            row = open_tasks.get(lane)
            age.add_metric([lane], (now - row["oldest"]).total_seconds() if row else 0.0)
            count.add_metric([lane], row["n"] if row else 0)
        yield age
        yield count

    # --- Redis ---------------------------------------------------------------------------

    def _from_redis(self, models: list[str]):
        from workflows.pipeline.engines import breaker

        # The breakers of every model that was ever called, and of the default model.
        names = sorted(set(models) | {settings.REVIEWDESK_DEFAULT_MODEL})
        states = GaugeMetricFamily("reviewdesk_circuit_breaker_state", "Circuit breaker per model at the configured "
                                   "provider: 0 closed, 1 half-open (a trial request may go), 2 open.",
                                   labels=["model"])
        for model, state in breaker.circuit_states(names):
            states.add_metric([model], BREAKER_VALUES.get(state, 2))
        yield states
        if not settings.REDIS_URL:  # the filesystem broker of the demo run has no list to measure
            return
        client = breaker.shared_redis(settings.REDIS_URL)
        depth = GaugeMetricFamily("reviewdesk_queue_depth", "Tasks waiting in the broker queue (not yet taken by a "
                                  "worker), by queue: llm (draft generation) and celery (periodic work).",
                                  labels=["queue"])
        for role, name in (("llm", settings.REVIEWDESK_LLM_QUEUE), ("celery", settings.CELERY_TASK_DEFAULT_QUEUE)):
            pipe = client.pipeline(transaction=False)
            for step in _PRIORITY_STEPS:
                pipe.llen(name if step == 0 else f"{name}{_PRIORITY_SEPARATOR}{step}")
            depth.add_metric([role], sum(pipe.execute()))
        yield depth


def _le(bound: float) -> str:
    return repr(float(bound))


def reviewdesk_metrics() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReviewDeskCollector())
    return generate_latest(registry)


# --- the view ------------------------------------------------------------------------------


def _refusal(request) -> HttpResponse | None:
    """None when the request may read the metrics; else the response that refuses it."""
    token = settings.REVIEWDESK_METRICS_TOKEN
    if not token:
        if settings.DEBUG:
            return None
        # Production without a token: the endpoint is off, and says nothing about itself. A
        # signed-in user gets the app's usual refusal (a 404 recorded as auth.denied).
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            from workflows.denials import OutOfScope

            raise OutOfScope("metrics")
        return HttpResponse("Not Found", status=404, content_type="text/plain")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return None
    # Not an auth.denied audit event: a misconfigured scraper retries every few seconds.
    log.warning("metrics: refused a request without the right bearer token")
    response = HttpResponse("A bearer token is required (Authorization: Bearer <REVIEWDESK_METRICS_TOKEN>).\n",
                            status=401, content_type="text/plain")
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


@login_not_required
@require_GET
def metrics(request):
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    # django-prometheus's export: this process's request and process metrics (or every gunicorn
    # worker's, aggregated, when PROMETHEUS_MULTIPROC_DIR is set), then ReviewDesk's own.
    from django_prometheus.exports import ExportToDjangoView

    response = ExportToDjangoView(request)
    response.content = response.content + reviewdesk_metrics()
    return response
