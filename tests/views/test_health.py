"""Health endpoints answer without login; /readyz checks the database and the real broker."""
from __future__ import annotations

import time

import pytest

from reviewdesk.celery import app


@pytest.fixture
def unreachable_broker():
    # Nothing listens on port 1; the check must say so rather than hang or raise.
    saved = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    try:
        yield saved
    finally:
        app.conf.broker_url = saved


def test_healthz_is_open_and_cheap(client, db, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_database_and_redis(client, db, settings):
    assert settings.CELERY_BROKER_URL.startswith("redis://"), "the suite runs with Redis configured"
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "broker": "ok"}
    assert body["broker"] == "redis"


def test_readyz_is_503_with_a_message_when_the_broker_is_down(client, db, unreachable_broker):
    started = time.monotonic()
    response = client.get("/readyz")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] != "ok" and body["checks"]["broker"].strip()
    # A refused connection is known at once; the 503 must arrive within a probe's default
    # 1 s timeout, or the orchestrator sees a timeout instead of the reason.
    assert elapsed < 1.0, f"readyz took {elapsed:.1f}s with the broker down"


def test_readyz_recovers_when_the_broker_is_back(client, db, unreachable_broker):
    assert client.get("/readyz").status_code == 503
    app.conf.broker_url = unreachable_broker  # the real Redis again
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_health_endpoints_are_get_only(client, db, method):
    for url in ("/healthz", "/readyz"):
        assert getattr(client, method)(url).status_code == 405
