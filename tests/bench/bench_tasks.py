"""Baseline tasks for `make bench`, loaded into the same worker processes as the app's tasks
(`celery worker --include tests.bench.bench_tasks`); never part of the app.

Each task pushes the worker's wall-clock time onto a Redis list when it is done, so the bench
driver sees the end of a task with BLPOP (no result backend, as in the app:
CELERY_TASK_IGNORE_RESULT) and knows when it finished.

A worker_ready handler builds what every generation builds once per process (Presidio's
analyzer, the shared openai client), so the figures are steady state, not a cold start.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time

import redis
from celery import shared_task
from celery.signals import worker_ready

log = logging.getLogger(__name__)
# Diagnostic only (run_bench.py --switch-interval): how long a thread may keep the GIL while
# another waits for it. Never set unless the bench is asked to.
if os.environ.get("BENCH_SWITCH_INTERVAL"):
    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
_client: redis.Redis | None = None
_lock = threading.Lock()


def _redis() -> redis.Redis:
    global _client
    with _lock:
        if _client is None:
            _client = redis.Redis.from_url(os.environ["REDIS_URL"], max_connections=512)
        return _client


def _done(key: str) -> None:
    _redis().rpush(key, repr(time.time()))


@shared_task(name="bench.noop")
def noop(key: str) -> None:
    _done(key)


@shared_task(name="bench.sleep")
def sleep(seconds: float, key: str) -> None:
    time.sleep(seconds)
    _done(key)


@worker_ready.connect
def _warm_up(**kwargs) -> None:
    started = time.monotonic()
    from workflows.pipeline.engines import default_engine
    from workflows.pipeline.pii_detect import detect

    detect("Warm-up: call Jane on +44 20 7946 0958 or mail jane@example.com.")
    default_engine()
    _redis().ping()
    log.warning("bench warm-up done in %.2f s", time.monotonic() - started)
