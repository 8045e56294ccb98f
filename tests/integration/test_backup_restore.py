"""Backup and restore (docs/OPERATIONS.md): a pg_dump of the database restores into a fresh one
whose audit chain verifies against the anchors kept outside the database; a restore of an older
dump, which silently loses the events after it, is named by verify_audit, and so is a restored
database that goes on appending over the lost ids."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.db import connection

from tests.conftest import ROOT, RUN_ID
from tests.integration.conftest import drafted, submit
from workflows import audit, audit_chain

KEY = "backup-test-anchor-key-kept-outside-the-database"


def _server() -> str:
    return os.environ["DATABASE_URL"].rsplit("/", 1)[0]


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)


def _psql(sql: str) -> None:
    _run("psql", f"{_server()}/postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql).check_returncode()


def _dump(path) -> None:
    """What docs/OPERATIONS.md tells operators to run (custom format, no owners or grants)."""
    result = _run("pg_dump", "--format=custom", "--no-owner", "--no-acl", "--file", str(path),
                  f"{_server()}/{connection.settings_dict['NAME']}")
    assert result.returncode == 0, result.stderr


def _restore(path, database: str) -> None:
    _psql(f'CREATE DATABASE "{database}"')
    result = _run("pg_restore", "--no-owner", "--no-acl", "--exit-on-error", "--dbname",
                  f"{_server()}/{database}", str(path))
    assert result.returncode == 0, result.stderr


def _manage(database: str, *args: str, anchors) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": f"{_server()}/{database}", "REVIEWDESK_AUDIT_ANCHOR_DIR": str(anchors),
           "REVIEWDESK_AUDIT_ANCHOR_KEY": KEY, "DJANGO_DEBUG": "true"}
    env.pop("DATABASE_MIGRATE_URL", None)
    return _run(sys.executable, "manage.py", *args, cwd=ROOT, env=env)


@pytest.fixture
def restored_names():
    names = [f"test_reviewdesk_{RUN_ID}_restore{i}" for i in range(2)]
    yield names
    for name in names:
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_dump_restores_and_its_chain_verifies_and_an_older_one_is_named(
        transactional_db, demo, settings, tmp_path, restored_names):
    anchors = tmp_path / "anchors"
    settings.REVIEWDESK_AUDIT_ANCHOR_DIR, settings.REVIEWDESK_AUDIT_ANCHOR_KEY = anchors, KEY
    drafted(submit(demo, {"customer_name": "A", "complaint": "broken", "channel": "email",
                          "customer_email": "a@example.com", "order_value": "1", "refund_offered": False}),
            lane="auto")
    audit_chain.verify_checkpoint()
    audit.chain_now()  # its own audit.verified event too: a backup of a quiet, fully linked chain
    _dump(older := tmp_path / "older.dump")

    drafted(submit(demo, {"customer_name": "B", "complaint": "late", "channel": "email",
                          "customer_email": "b@example.com", "order_value": "2", "refund_offered": False}),
            lane="blocking")
    anchor = audit_chain.anchor_head()
    audit.chain_now()
    _dump(latest := tmp_path / "latest.dump")

    # The latest dump: the whole chain, and the anchor's event with its hash at its position.
    fresh, old = restored_names
    _restore(latest, fresh)
    result = _manage(fresh, "verify_audit", anchors=anchors)
    assert result.returncode == 0, result.stderr
    assert "audit chain ok" in result.stdout
    assert f"anchor ok: event {anchor.event_id} ({anchor.count} events" in result.stdout

    # The older dump verifies as a chain (it is a valid prefix) but misses the anchored event: a cut tail.
    _restore(older, old)
    result = _manage(old, "verify_audit", anchors=anchors)
    assert result.returncode != 0
    assert f"anchored event {anchor.event_id} is missing" in result.stderr and "cut tail" in result.stderr

    # Restoring an older backup on purpose (docs/OPERATIONS.md, "Restore"): the anchors written
    # after the dump are moved aside, kept and never deleted, and the restored chain verifies.
    aside = anchors / "superseded-by-restore"
    aside.mkdir()
    for file in anchors.glob("anchor-*.json"):
        file.rename(aside / file.name)
    result = _manage(old, "verify_audit", anchors=anchors)
    assert result.returncode == 0 and "audit chain ok" in result.stdout, result.stderr
    for file in aside.glob("anchor-*.json"):
        file.rename(anchors / file.name)

    # Going on from there (the app restarted on the old restore) reuses the lost ids: the event now
    # at the anchored id is another one, and the anchor names it.
    append = ("from workflows.audit_chain import verify_checkpoint\n"
              f"while verify_checkpoint().to_id < {anchor.event_id}: pass\n"
              "from workflows.audit import chain_now\nchain_now()")
    assert _manage(old, "shell", "-c", append, anchors=anchors).returncode == 0
    result = _manage(old, "verify_audit", anchors=anchors)
    assert result.returncode != 0
    assert f"anchor mismatch at event {anchor.event_id}" in result.stderr
