"""Shared fixtures: real PostgreSQL, real Redis, a real Celery worker process and a real
OpenAI-compatible HTTP server on loopback. Run through `make test`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL_API_KEY = "sk-test-reviewdesk"


def pytest_configure(config):
    # The suite is about real services; refuse to run on the SQLite / filesystem-broker default.
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")) or not redis_url.startswith("redis://"):
        raise pytest.UsageError(
            "The test suite runs against PostgreSQL and Redis: use `make test`, or set "
            "DATABASE_URL=postgres://postgres@127.0.0.1:5432/test and REDIS_URL=redis://127.0.0.1:6379/15."
        )
    # Playwright's sync API runs an event loop in the test thread; the ORM calls made by tests
    # around it are still synchronous and safe.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # Under CI nothing may be skipped: a skipped browser test is a missing test.
    if os.environ.get("CI") == "true" and terminalreporter.stats.get("skipped"):
        terminalreporter.write_line("CI=true: skipped tests are not allowed", red=True)
        config._reviewdesk_skipped = True


def pytest_sessionfinish(session, exitstatus):
    if getattr(session.config, "_reviewdesk_skipped", False) and exitstatus == 0:
        session.exitstatus = 1


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # seed_demo and make_user hash a password per user; PBKDF2's work factor would make up most
    # of the suite's run time while no test is about password strength.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- the fake model ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_server(make_httpserver):
    """The OpenAI-compatible server, with a permanent scripted handler for the whole session."""
    from tests.fake_openai import FakeModel

    model = FakeModel()
    make_httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_handler(model.handle)
    model.base_url = make_httpserver.url_for("/v1")
    return model


@pytest.fixture
def fake_model(model_server, settings):
    """Point this process's openai client at the fake server and start from no requests."""
    settings.OPENAI_API_KEY = MODEL_API_KEY
    settings.OPENAI_BASE_URL = model_server.base_url
    settings.REVIEWDESK_LLM_MAX_RETRIES = 0
    model_server.reset()
    return model_server


# --- the Celery worker -------------------------------------------------------------------


def _celery(*args, env, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "reviewdesk", *args], cwd=ROOT, env=env, **kwargs)


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, model_server, tmp_path_factory):
    """A real `celery worker` process consuming from Redis and writing to the test database."""
    from django.db import connection

    env = {
        **os.environ,
        "DATABASE_URL": os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + connection.settings_dict["NAME"],
        "OPENAI_API_KEY": MODEL_API_KEY,
        "OPENAI_BASE_URL": model_server.base_url,
        "REVIEWDESK_LLM_MAX_RETRIES": "0",
        "REVIEWDESK_LLM_TIMEOUT": "10",
        "DJANGO_DEBUG": "true",
    }
    # Start from empty queues: a previous run may have left messages in this Redis database.
    subprocess.run([sys.executable, "-m", "celery", "-A", "reviewdesk", "purge", "-f", "-Q", "llm,celery"],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    log = open(log_path, "w")
    proc = _celery("worker", "-Q", "llm,celery", "--concurrency", "2", "-l", "info", "--without-heartbeat",
                   "--without-mingle", "--without-gossip", "-n", f"test-{os.getpid()}@%h",
                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    from reviewdesk.celery import app

    deadline = time.monotonic() + 60
    while not app.control.ping(timeout=1.0):
        if proc.poll() is not None or time.monotonic() > deadline:
            log.flush()
            raise RuntimeError(f"celery worker did not start:\n{log_path.read_text()[-4000:]}")
    proc.log_path = log_path
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@pytest.fixture
def worker(celery_worker_process, transactional_db, fake_model):
    """Use in tests that need generation to happen in the real worker (data must be committed)."""
    return celery_worker_process


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"):
    """Poll until ``predicate()`` is truthy; return its value. Fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


# --- domain data -------------------------------------------------------------------------


@pytest.fixture
def demo(db):
    """The demo users (one per role) and the three demo workflows, as `seed_demo` makes them."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from workflows.models import Workflow

    call_command("seed_demo", stdout=open(os.devnull, "w"))
    users = {u.username: u for u in get_user_model().objects.filter(
        username__in=["submitter", "reviewer", "compliance", "wfadmin"])}
    workflows = {w.slug: w for w in Workflow.objects.all()}
    return type("Demo", (), {"users": users, "workflows": workflows,
                             "version": lambda self, slug: workflows[slug].versions.order_by("-number").first()})()


@pytest.fixture
def make_user(db):
    """Create a user in the given groups (created when missing)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    def make(username: str, *groups: str):
        user = get_user_model().objects.create_user(username=username, password="pw-" + username)
        user.groups.set([Group.objects.get_or_create(name=g)[0] for g in groups])
        return user

    return make


CUSTOMER_REPLY_INPUT = {
    "customer_name": "Ann Example",
    "customer_email": "ann@example.com",
    "channel": "email",
    "complaint": "My parcel arrived broken.",
    "order_value": "42.50",
    "refund_offered": True,
}


@pytest.fixture
def customer_reply_input():
    return dict(CUSTOMER_REPLY_INPUT)
