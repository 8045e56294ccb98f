"""Checks on the repository and on the test suite itself: the pure tests really need no
services, each run keeps to its own names, the demo data fixture, migrations match the models,
and ruff finds nothing.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import DEMO_SLUGS, DEMO_USERNAMES, NAMESPACE, TEST_DATABASE_NAME, namespaced_settings

ROOT = Path(__file__).resolve().parents[2]
# The pure tests the issue names (routing, confidence, definitions, PII, prompts) and the
# properties; globs, so that new files of these areas are covered too.
PURE_MODULES = ("test_routing.py", "test_confidence*.py", "test_definitions.py", "test_pii*.py", "test_prompts.py",
                "test_properties.py")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _without_services() -> dict[str, str]:
    """This environment with no DATABASE_URL and no REDIS_URL, and libpq's defaults pointing
    at a closed port: nothing can reach PostgreSQL or Redis."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "REVIEWDESK_NAMESPACE", "PYTEST_ADDOPTS"}
           and not k.startswith("PYTEST_")}
    env.update(PGHOST="127.0.0.1", PGPORT=str(_closed_port()))
    return env


def _pytest(*args, env, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


# --- pure tests run without services -------------------------------------------------------


def test_pure_tests_pass_with_no_database_url_no_redis_url_and_postgresql_unreachable(tmp_path):
    files = sorted({path for pattern in PURE_MODULES for path in (ROOT / "tests" / "unit").glob(pattern)})
    for pattern in PURE_MODULES:
        assert any(path.match(pattern) for path in files), f"no test module matches {pattern}"
    report = tmp_path / "pure.xml"
    # Without DATABASE_URL the settings name the SQLite fallback under var/; importing them must
    # be all that happens to it (pytest-django keeps pure tests off the database).
    sqlite = ROOT / "var" / "db.sqlite3"
    sqlite_before = sqlite.stat().st_mtime_ns if sqlite.exists() else None
    proc = _pytest("-m", "pure", "-q", f"--junitxml={report}", *[str(p.relative_to(ROOT)) for p in files],
                   env=_without_services())
    assert proc.returncode == 0, f"pure tests failed without services:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    assert (sqlite.stat().st_mtime_ns if sqlite.exists() else None) == sqlite_before, "var/db.sqlite3 was written"
    passed: dict[str, int] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        assert case.find("skipped") is None, f"{case.get('classname')}::{case.get('name')} was skipped"
        module = case.get("classname").split(".")[2]
        passed[module] = passed.get(module, 0) + 1
    assert {f"{p.stem}" for p in files} <= set(passed), f"modules without a passing pure test: {passed}"


def test_a_selection_that_needs_services_refuses_to_start_without_them():
    proc = _pytest("-q", f"{Path(__file__).relative_to(ROOT)}::test_the_demo_fixture_has_every_role_and_workflow",
                   env=_without_services(), timeout=120)
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert "need PostgreSQL and Redis" in proc.stderr and "pytest -m pure" in proc.stderr, proc.stderr


# --- each run keeps to its own names --------------------------------------------------------


def _settings_in_a_new_process(namespace: str | None) -> dict:
    env = {**_without_services(), "REDIS_URL": "redis://127.0.0.1:6379/0"}  # parsed only, never contacted
    if namespace is not None:
        env["REVIEWDESK_NAMESPACE"] = namespace
    code = """
import json, django
django.setup()
from django.conf import settings as s
from reviewdesk.celery import app
print(json.dumps({
    "REVIEWDESK_NAMESPACE": s.REVIEWDESK_NAMESPACE,
    "REVIEWDESK_LLM_QUEUE": s.REVIEWDESK_LLM_QUEUE,
    "CELERY_TASK_DEFAULT_QUEUE": s.CELERY_TASK_DEFAULT_QUEUE,
    "CELERY_TASK_ROUTES": s.CELERY_TASK_ROUTES,
    "drafts_key_prefix": s.CACHES["drafts"]["KEY_PREFIX"],
    "routed_to": app.amqp.router.route({}, "workflows.tasks.generate_draft")["queue"].name,
}))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_production_keeps_the_queue_names_llm_and_celery():
    values = _settings_in_a_new_process(None)
    assert values["REVIEWDESK_LLM_QUEUE"] == values["routed_to"] == "llm"
    assert values["CELERY_TASK_DEFAULT_QUEUE"] == "celery"
    assert values["drafts_key_prefix"] == "reviewdesk"


def test_this_run_and_its_worker_use_the_same_names_of_their_own(settings, django_db_modify_db_settings):
    from reviewdesk.celery import app

    worker_side = _settings_in_a_new_process(NAMESPACE)  # the worker gets REVIEWDESK_NAMESPACE
    assert worker_side.pop("routed_to") == f"{NAMESPACE}llm"
    assert worker_side == namespaced_settings(NAMESPACE, redis=True)
    assert NAMESPACE.startswith("test") and str(os.getpid()) in NAMESPACE
    # This process imported its settings before tests/conftest.py gave them the run's names.
    assert settings.REVIEWDESK_LLM_QUEUE == f"{NAMESPACE}llm"
    assert settings.CELERY_TASK_DEFAULT_QUEUE == f"{NAMESPACE}celery"
    assert app.amqp.router.route({}, "workflows.tasks.generate_draft")["queue"].name == f"{NAMESPACE}llm"
    if settings.REDIS_URL:
        from django.core.cache import caches

        assert caches["drafts"].key_prefix == f"{NAMESPACE}reviewdesk"
    assert settings.DATABASES["default"]["TEST"]["NAME"] == TEST_DATABASE_NAME
    assert os.environ["REVIEWDESK_NAMESPACE"] == NAMESPACE


def test_a_namespace_that_is_not_a_plain_name_is_refused():
    env = {**_without_services(), "REVIEWDESK_NAMESPACE": "a b"}
    proc = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "REVIEWDESK_NAMESPACE='a b'" in proc.stderr, proc.stderr


# --- the demo data, committed once per run --------------------------------------------------


def test_a_db_test_without_demo_starts_from_an_empty_database(db):
    from django.contrib.auth import get_user_model

    from workflows.models import AuditEvent, Workflow

    assert not get_user_model().objects.filter(username__in=DEMO_USERNAMES).exists()
    assert not Workflow.objects.exists() and not AuditEvent.objects.exists()


def test_a_transactional_test_without_demo_starts_from_an_empty_database(transactional_db):
    from django.contrib.auth import get_user_model

    from workflows.models import Workflow

    assert not get_user_model().objects.filter(username__in=DEMO_USERNAMES).exists()
    assert not Workflow.objects.exists()


def test_the_demo_fixture_has_every_role_and_workflow(demo):
    assert set(demo.users) == set(DEMO_USERNAMES)
    assert all(demo.users[name].groups.exists() for name in DEMO_USERNAMES)
    assert set(DEMO_SLUGS) <= set(demo.workflows)
    for slug in DEMO_SLUGS:
        assert demo.version(slug).number == 1
        assert demo.version(slug).workflow == demo.workflows[slug]


@pytest.mark.parametrize("round_", [1, 2])
def test_transactional_tests_find_the_demo_data_after_another_one_flushed_it(transactional_db, demo, round_):
    test_the_demo_fixture_has_every_role_and_workflow(demo)
    demo.users["submitter"].groups.clear()  # committed; the flush at the end removes it with the rest


# --- the repository -------------------------------------------------------------------------


def test_migrations_match_the_models():
    # An in-memory SQLite database: the check reads no real database and writes no file.
    env = {**_without_services(), "DATABASE_URL": "sqlite://:memory:"}
    proc = subprocess.run([sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"models changed without a migration:\n{proc.stdout}\n{proc.stderr}"


def test_ruff_finds_nothing():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"ruff check . (rules in ruff.toml):\n{proc.stdout}\n{proc.stderr}"
