"""Shared fixtures: real PostgreSQL, real Redis, a real Celery worker process and a real
OpenAI-compatible HTTP server on loopback. Run through `make test`.

Pure tests need none of the services. A test is pure when none of its fixtures reaches the
database or the worker (db, transactional_db, live_server, worker, demo, ...), it is not marked
django_db or services, and its module imports no Redis or PostgreSQL client; such tests get the
``pure`` marker automatically, and `pytest -m pure` (or any selection of pure tests, e.g.
`pytest tests/unit/test_routing.py`) runs with no DATABASE_URL, no REDIS_URL and no server. A
selection that contains a test needing services refuses to start unless DATABASE_URL points at
PostgreSQL and REDIS_URL at Redis.

Every run is isolated from any other run on the same machine: it has its own id (process id +
random), and from it its own test database (test_reviewdesk_<id>, dropped at the end), its own
Celery queues and Redis cache keys (REVIEWDESK_NAMESPACE=test<id>., given to the worker too), and
its worker answers pings under its own name.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL_API_KEY = "sk-test-reviewdesk"

# --- this run's names ----------------------------------------------------------------------

RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"
# Queues <NAMESPACE>llm and <NAMESPACE>celery, cache keys <NAMESPACE>reviewdesk:... (settings.py).
NAMESPACE = f"test{RUN_ID}."
TEST_DATABASE_NAME = f"test_reviewdesk_{RUN_ID}"
WORKER_NAME = f"test-{RUN_ID}@{socket.gethostname()}"

# Fixtures through which a test reaches PostgreSQL (pytest-django's db fixtures all request
# django_db_setup) or the Celery worker (and so Redis).
SERVICE_FIXTURES = frozenset({"django_db_setup", "live_server", "celery_worker_process", "redis_client"})
DEMO_USERNAMES = ("submitter", "reviewer", "compliance", "wfadmin")
DEMO_SLUGS = ("customer-reply", "compliance-report", "underwriting-memo")


def namespaced_settings(namespace: str, *, redis: bool) -> dict:
    """The settings REVIEWDESK_NAMESPACE=<namespace> gives (reviewdesk/settings.py); the test
    process imported its settings before this conftest, so it applies them itself.
    tests/unit/test_repo_checks.py checks they equal what a fresh import computes."""
    values = {
        "REVIEWDESK_NAMESPACE": namespace,
        "REVIEWDESK_LLM_QUEUE": f"{namespace}llm",
        "CELERY_TASK_DEFAULT_QUEUE": f"{namespace}celery",
        "CELERY_TASK_ROUTES": {"workflows.tasks.generate_draft": {"queue": f"{namespace}llm"},
                               "evals.tasks.run_eval_case": {"queue": f"{namespace}llm"}},
    }
    if redis:
        values["drafts_key_prefix"] = f"{namespace}reviewdesk"
    return values


def _isolate_this_run() -> None:
    from django.conf import settings

    # Subprocesses (the worker, manage.py commands run by tests) import settings with these.
    os.environ["REVIEWDESK_NAMESPACE"] = NAMESPACE
    values = namespaced_settings(NAMESPACE, redis=bool(settings.REDIS_URL))
    key_prefix = values.pop("drafts_key_prefix", None)
    for name, value in values.items():
        setattr(settings, name, value)
    if key_prefix is not None:
        settings.CACHES["drafts"]["KEY_PREFIX"] = key_prefix
    from reviewdesk.celery import app

    if app.configured:  # read the settings already: give it the new names too
        app.conf.update(task_default_queue=settings.CELERY_TASK_DEFAULT_QUEUE,
                        task_routes=settings.CELERY_TASK_ROUTES)


def pytest_configure(config):
    if config.getoption("reuse_db", False):
        # A kept database would outlive the run that named it, and carry the demo data it
        # committed into the next run, whose tests without `demo` expect an empty database.
        raise pytest.UsageError("--reuse-db is not supported: each run creates and drops its own test database.")
    _isolate_this_run()
    # Playwright's sync API runs an event loop in the test thread; the ORM calls made by tests
    # around it are still synchronous and safe.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    # Property tests: no per-example deadline (a loaded machine, or two suite runs at once, must
    # not turn a slow example into a failure); print the blob that reproduces a failure.
    from hypothesis import settings as hypothesis_settings

    hypothesis_settings.register_profile("reviewdesk", deadline=None, print_blob=True)
    hypothesis_settings.load_profile("reviewdesk")


def pytest_report_header(config):
    return [f"reviewdesk run {RUN_ID}: database {TEST_DATABASE_NAME}, queues {NAMESPACE}llm,{NAMESPACE}celery"]


# --- which tests need services, and in which order they run ------------------------------


def needs_services(item) -> bool:
    """True when the test reaches PostgreSQL or Redis: through its fixtures, its marks
    (django_db, services), or a client library its module imports to talk to them itself."""
    if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    if item.get_closest_marker("django_db") or item.get_closest_marker("services"):
        return True
    module = getattr(item, "module", None)
    if module is not None and _imports_a_service_client(module):
        return True
    from django.test import TransactionTestCase

    cls = getattr(item, "cls", None)
    return bool(cls and issubclass(cls, TransactionTestCase) and cls.databases)


SERVICE_CLIENTS = frozenset({"redis", "psycopg", "psycopg2", "psycopg_pool"})


def _imports_a_service_client(module) -> bool:
    """The test module imports the Redis or PostgreSQL client (``import redis``, ``from redis
    import Redis``): its tests talk to the server without going through a fixture."""
    cached = getattr(module, "_reviewdesk_service_client", None)
    if cached is None:
        origins = (value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
                   for value in vars(module).values())
        cached = any(isinstance(o, str) and o.split(".")[0] in SERVICE_CLIENTS for o in origins)
        module._reviewdesk_service_client = cached
    return cached


def _run_order(item) -> int:
    """Database tests without the demo data, then those with it, then pure tests.

    The demo data is committed once (``_demo_committed``) and every later `db` test starts from
    it, so tests that expect an empty database must come before; transactional tests flush
    the database when they end, so each group's transactional tests follow its `db` tests
    (as pytest-django orders them).
    """
    names = set(getattr(item, "fixturenames", ()))
    marker = item.get_closest_marker("django_db")
    transactional = bool(names & {"transactional_db", "live_server"}) or bool(
        marker and (marker.kwargs.get("transaction") or marker.kwargs.get("reset_sequences")))
    if not needs_services(item):
        return 4
    return (2 if "demo" in names else 0) + (1 if transactional else 0)


def _services_configured() -> str | None:
    """None when both services are configured, else what is missing."""
    missing = []
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        missing.append("DATABASE_URL=postgres://...")
    if not os.environ.get("REDIS_URL", "").startswith("redis://"):
        missing.append("REDIS_URL=redis://...")
    return ", ".join(missing) or None


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(session, config, items):
    # Before -m selects: mark the pure tests so that `-m pure` / `-m "not pure"` work.
    for item in items:
        if not needs_services(item):
            item.add_marker(pytest.mark.pure)
    result = yield
    # After selection and pytest-django's own ordering.
    items.sort(key=_run_order)
    needing = [item for item in items if needs_services(item)]
    config.stash[_uses_services_key] = bool(needing)
    missing = _services_configured()
    if needing and missing and not config.option.collectonly:
        # The suite is about real services; never fall back to SQLite / the filesystem broker.
        shown = ", ".join(item.nodeid for item in needing[:3]) + (", ..." if len(needing) > 3 else "")
        raise pytest.UsageError(
            f"{len(needing)} of the {len(items)} selected tests need PostgreSQL and Redis ({shown}), "
            f"but the environment lacks {missing}. Use `make test`, or set "
            "DATABASE_URL=postgres://postgres@127.0.0.1:5432/test and REDIS_URL=redis://127.0.0.1:6379/15; "
            "or run only the tests that need no services: `pytest -m pure`."
        )
    return result


_uses_services_key = pytest.StashKey[bool]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # Under CI nothing may be skipped: a skipped browser test is a missing test.
    if os.environ.get("CI") == "true" and terminalreporter.stats.get("skipped"):
        terminalreporter.write_line("CI=true: skipped tests are not allowed", red=True)
        config._reviewdesk_skipped = True


def pytest_sessionfinish(session, exitstatus):
    if getattr(session.config, "_reviewdesk_skipped", False) and exitstatus == 0:
        session.exitstatus = 1
    if session.config.stash.get(_uses_services_key, False):
        _forget_this_run_in_redis()


def _forget_this_run_in_redis() -> None:
    """Delete the keys this run left in Redis: its queues, their kombu bindings, its cache keys."""
    url = os.environ.get("REDIS_URL", "")
    if not url.startswith("redis://"):
        return
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        for key in client.scan_iter(match=f"*{NAMESPACE}*", count=1000):
            client.delete(key)
        for key in client.scan_iter(match="_kombu.binding.*", count=1000):
            mine = [m for m in client.smembers(key) if NAMESPACE.encode() in m or RUN_ID.encode() in m]
            if mine:
                client.srem(key, *mine)
        client.close()
    except redis.RedisError:
        pass  # leftovers are this run's own names; they cannot reach another run


# --- the test database ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """This run's own test database; pytest-django creates it and drops it at the end.

    The test process's connection pool checks a connection before handing it out: a test that
    terminates the database sessions (to see the worker recover) must not leave dead pooled
    connections to the tests after it.
    """
    from django.conf import settings
    from django.db import connections

    for settings_dict in (settings.DATABASES["default"], connections["default"].settings_dict):
        settings_dict.setdefault("TEST", {})["NAME"] = TEST_DATABASE_NAME
        settings_dict["CONN_HEALTH_CHECKS"] = True


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # seed_demo and make_user hash a password per user; PBKDF2's work factor would make up most
    # of the suite's run time while no test is about password strength.
    settings.PASSWORD_HASHERS = FAST_HASHERS


FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def redis_client():
    """A client of the suite's Redis (REDIS_URL). Tests that look at Redis themselves take it
    (or carry @pytest.mark.services) so that they are not counted as pure."""
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    yield client
    client.close()


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
    # Circuit breakers and remembered parameter refusals live in Redis for every worker; a
    # test starts from a healthy provider whatever the previous test did to it.
    from workflows.pipeline.engines.openai import reset_provider_state

    reset_provider_state(model_server.base_url)
    return model_server


# --- the Celery worker -------------------------------------------------------------------


def _celery(*args, env, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "reviewdesk", *args], cwd=ROOT, env=env, **kwargs)


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, model_server, tmp_path_factory):
    """A real `celery worker` process consuming this run's queues on Redis and writing to this
    run's test database."""
    from django.conf import settings
    from django.db import connection

    queues = f"{settings.REVIEWDESK_LLM_QUEUE},{settings.CELERY_TASK_DEFAULT_QUEUE}"
    env = {
        **os.environ,
        "DATABASE_URL": os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + connection.settings_dict["NAME"],
        "REVIEWDESK_NAMESPACE": NAMESPACE,
        "OPENAI_API_KEY": MODEL_API_KEY,
        "OPENAI_BASE_URL": model_server.base_url,
        "REVIEWDESK_LLM_MAX_RETRIES": "0",
        "REVIEWDESK_LLM_TIMEOUT": "10",
        # Circuits opened by a fault test close again within the test's patience.
        "REVIEWDESK_LLM_BREAKER_RESET_SECONDS": "2",
        "DJANGO_DEBUG": "true",
        # Audit export jobs write here; tests point the test process's settings at it too.
        "REVIEWDESK_EXPORT_DIR": str(tmp_path_factory.mktemp("exports")),
    }
    # Start from empty queues. They are this run's own; another run's are never touched.
    subprocess.run([sys.executable, "-m", "celery", "-A", "reviewdesk", "purge", "-f", "-Q", queues],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    log = open(log_path, "w")
    proc = _celery("worker", "-Q", queues, "--concurrency", "2", "-l", "info", "--without-heartbeat",
                   "--without-mingle", "--without-gossip", "-n", WORKER_NAME,
                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    from reviewdesk.celery import app

    # Ping this run's worker by name: a broadcast ping would also be answered by another run's.
    deadline = time.monotonic() + 60
    while not app.control.ping(destination=[WORKER_NAME], timeout=1.0):
        if proc.poll() is not None or time.monotonic() > deadline:
            log.flush()
            raise RuntimeError(f"celery worker did not start:\n{log_path.read_text()[-4000:]}")
    proc.log_path = log_path
    proc.export_dir = env["REVIEWDESK_EXPORT_DIR"]
    _session_worker["proc"] = proc
    yield proc
    _session_worker["proc"] = None
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


# The session's worker once a test has started it; the flush guard below asks it only then.
_session_worker: dict = {"proc": None}


def _worker_busy() -> int:
    """Messages waiting in this run's queues plus tasks the session worker holds."""
    from django.conf import settings

    from reviewdesk.celery import app

    waiting = 0
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        for queue in (settings.REVIEWDESK_LLM_QUEUE, settings.CELERY_TASK_DEFAULT_QUEUE):
            try:
                waiting += channel.queue_declare(queue=queue, passive=True).message_count
            except Exception:  # noqa: BLE001 - a queue never declared holds nothing
                pass
    inspect = app.control.inspect(destination=[WORKER_NAME], timeout=1.0)
    held = 0
    for replies in (inspect.active() or {}, inspect.reserved() or {}):
        held += sum(len(tasks) for tasks in replies.values())
    return waiting + held


@pytest.fixture(autouse=True)
def _worker_quiet_before_flush(request):
    """A transactional test ends by TRUNCATE-ing every table. If work it started (a send-back's
    new draft, a chain run) is still running in the session's worker, the worker's transaction
    and the TRUNCATE can deadlock and PostgreSQL may cancel the flush, failing a test that passed
    (seen once in CI). So such a test's teardown first waits, bounded, until the worker has
    nothing queued or running. Requesting transactional_db here makes this teardown run before
    its flush."""
    if "transactional_db" not in request.fixturenames:
        yield
        return
    request.getfixturevalue("transactional_db")
    yield
    proc = _session_worker["proc"]
    if proc is None or proc.poll() is not None:
        return
    deadline = time.monotonic() + 20
    while _worker_busy() and time.monotonic() < deadline:
        time.sleep(0.1)


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


def _demo_present() -> bool:
    from django.contrib.auth import get_user_model

    from workflows.models import Workflow

    return (get_user_model().objects.filter(username__in=DEMO_USERNAMES).count() == len(DEMO_USERNAMES)
            and Workflow.objects.filter(slug__in=DEMO_SLUGS).count() == len(DEMO_SLUGS))


def _seed_demo() -> None:
    from django.core.management import call_command
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=FAST_HASHERS), open(os.devnull, "w") as devnull:
        call_command("seed_demo", stdout=devnull)


@pytest.fixture(scope="session")
def _demo_committed(django_db_setup, django_db_blocker):
    """Commit the demo data to the test database once per run, outside any test's transaction.

    Session fixtures are set up before a test's function fixtures, so this runs before the
    first `demo` test opens its transaction; every `db` test then starts from the committed
    data and rolls its own changes back. Transactional tests flush the tables when they end,
    so `demo` seeds again when it finds the data gone (see _run_order for why tests without
    `demo` never see it).
    """
    with django_db_blocker.unblock():
        if not _demo_present():
            _seed_demo()


@pytest.fixture
def demo(_demo_committed, db):
    """The demo users (one per role) and the three demo workflows, as `seed_demo` makes them."""
    from django.contrib.auth import get_user_model

    from workflows.models import Workflow

    if not _demo_present():  # a transactional test before this one flushed the tables
        _seed_demo()
    users = {u.username: u for u in get_user_model().objects.filter(username__in=DEMO_USERNAMES)}
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
