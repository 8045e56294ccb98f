"""The runtime database role owns nothing and cannot change the audit table; the app still works
as that role. Against the real PostgreSQL, in a database and with two roles made for this run
(named after its id) and dropped at its end; no other role or database is touched."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest
from psycopg import errors

from tests.conftest import NAMESPACE, ROOT, RUN_ID
from workflows import db_roles

pytestmark = pytest.mark.services

DATABASE = f"test_reviewdesk_{RUN_ID}_roles"
OWNER, APP = f"rd_{RUN_ID}_owner", f"rd_{RUN_ID}_app"
OWNER_PASSWORD, APP_PASSWORD = "owner-pw-" + RUN_ID, "app-pw-" + RUN_ID


def _server() -> str:
    """postgres://user@host:port of the suite's DATABASE_URL (a superuser), without a database."""
    return os.environ["DATABASE_URL"].rsplit("/", 1)[0]


def _url(user: str, password: str, database: str = DATABASE) -> str:
    host = _server().split("@", 1)[1]
    return f"postgres://{user}:{password}@{host}/{database}"


def manage(*args: str, migrate_url: str | None = None, check: bool = True):
    """manage.py in a subprocess as a deployment runs it: DATABASE_URL the runtime role,
    DATABASE_MIGRATE_URL the owner."""
    env = {
        **os.environ,
        "DATABASE_URL": _url(APP, APP_PASSWORD),
        "DATABASE_MIGRATE_URL": migrate_url or _url(OWNER, OWNER_PASSWORD),
        # Tasks this subprocess sends go to queues no worker consumes (the suite's worker writes to
        # another database); conftest deletes every key under this run's namespace at the end.
        "REVIEWDESK_NAMESPACE": f"{NAMESPACE}roles.",
        "DJANGO_DEBUG": "true",
    }
    env.pop("OPENAI_API_KEY", None)  # the offline engine drafts
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    if check and result.returncode != 0:
        pytest.fail(f"manage.py {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _admin(database: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(f"{_server()}/{database}", autocommit=True)


@pytest.fixture(scope="module")
def roles_database():
    """This run's database, set up as a deployment is: roles first, then migrate as the owner."""
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{DATABASE}"')
    try:
        setup = manage("setup_db_roles", "--admin-url", f"{_server()}/{DATABASE}")
        migrated = manage("migrate", "--noinput")
        yield type("Setup", (), {"setup_output": setup.stdout, "migrate_output": migrated.stdout})
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
            for role in (APP, OWNER):  # their grants lived in that database only
                admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def _as(user: str, password: str) -> psycopg.Connection:
    return psycopg.connect(_url(user, password), autocommit=True)


REFUSED_ON_THE_AUDIT_TABLE = [
    "UPDATE workflows_auditevent SET action = 'forged' WHERE id = (SELECT min(id) FROM workflows_auditevent)",
    "DELETE FROM workflows_auditevent WHERE id = (SELECT max(id) FROM workflows_auditevent)",
    "TRUNCATE workflows_auditevent",
    "ALTER TABLE workflows_auditevent DISABLE TRIGGER workflows_auditevent_no_update_delete",
    "ALTER TABLE workflows_auditevent DISABLE TRIGGER ALL",
    "DROP TRIGGER workflows_auditevent_no_update_delete ON workflows_auditevent",
    "ALTER TABLE workflows_auditevent ADD COLUMN note text",
    "DROP TABLE workflows_auditevent",
    "CREATE TRIGGER sneak BEFORE INSERT ON workflows_auditevent FOR EACH ROW "
    "EXECUTE FUNCTION reviewdesk_audit_append_only()",
    "CREATE OR REPLACE FUNCTION reviewdesk_audit_append_only() RETURNS trigger AS $$ BEGIN RETURN NEW; END $$ "
    "LANGUAGE plpgsql",
    "UPDATE django_migrations SET applied = now()",
    "CREATE TABLE workflows_shadow (id int)",
    "SELECT setval(pg_get_serial_sequence('workflows_auditevent', 'id'), 1)",
]


def test_the_app_works_as_the_runtime_role(roles_database):
    """Drafted, routed, erased, purged, checkpointed and verified, all as the runtime role."""
    assert f"owner role {OWNER}: created" in roles_database.setup_output
    assert f"Granted {APP} its runtime privileges" in roles_database.migrate_output
    result = manage("shell", "-c", "import tests.integration.runtime_slice")
    report = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    assert report["role"] == APP
    assert len(report["states"]) == 2 and "generating" not in report["states"] and "failed" not in report["states"]
    assert all(report["lanes"]), report  # routed to a lane
    assert len(report["erased"]) == 1 and len(report["purged"]) == 1
    assert report["checkpoint_ok"] is True
    assert report["verify_audit"].startswith(f"audit chain ok: {report['events']} events")
    assert report["linked"] == report["events"] and report["unchained"] == 0


@pytest.mark.parametrize("statement", REFUSED_ON_THE_AUDIT_TABLE)
def test_the_runtime_role_is_refused(roles_database, statement):
    # Privileges are checked before any row is looked at, so the refusal does not depend on
    # which events exist (the slice above appends some when it runs first).
    with _as(APP, APP_PASSWORD) as app:
        # Refused by the privilege system itself, not by the append-only trigger (which raises
        # the same SQLSTATE with "append-only" in its message).
        with pytest.raises(errors.InsufficientPrivilege, match="permission denied|must be owner"):
            app.execute(statement)


def test_the_runtime_role_owns_nothing_and_has_no_special_attributes(roles_database):
    with _admin(DATABASE) as admin, admin.cursor() as cursor:
        assert db_roles.owned_by(cursor, APP) == []
        cursor.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = %s",
                       [APP])
        assert cursor.fetchone() == (False, False, False, False)
        cursor.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", [APP, OWNER])
        assert cursor.fetchone() == (False,)
        # The owner owns the tables and the audit functions; nothing in the schema is anyone else's.
        cursor.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) <> %s", [OWNER])
        assert cursor.fetchone() == (0,)
        cursor.execute("SELECT has_table_privilege(%s, 'workflows_auditevent', p) FROM unnest(ARRAY["
                       "'SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'TRIGGER', 'REFERENCES']) p", [APP])
        assert [row[0] for row in cursor.fetchall()] == [True, True, False, False, False, False, False]
        cursor.execute("SELECT has_function_privilege(%s, 'reviewdesk_audit_chain(bigint[], text[])', "
                       "'EXECUTE'), has_function_privilege('public', 'reviewdesk_audit_chain(bigint[], text[])', "
                       "'EXECUTE')", [APP])
        assert cursor.fetchone() == (True, False)
        # SECURITY DEFINER, the owner's, with a pinned search_path: the chainer's one UPDATE runs
        # with the owner's rights while the runtime role has no UPDATE on the table.
        cursor.execute("SELECT prosecdef, pg_get_userbyid(proowner), proconfig FROM pg_proc "
                       "WHERE proname = 'reviewdesk_audit_chain'")
        secdef, owner, config = cursor.fetchone()
        assert secdef is True and owner == OWNER and any(c.startswith("search_path=") for c in config)
        cursor.execute("SELECT count(*) FROM pg_proc WHERE proname = 'reviewdesk_audit_append'")
        assert cursor.fetchone() == (0,)  # the old chained append (migration 0004) is gone


_UNCHAINED_ROW = ("INSERT INTO workflows_auditevent (created_at, actor_label, action, object_type, object_id, "
                  "payload, request_id) VALUES (now(), 'system', 'auth.denied', 'roles-test', %s, '{}', '') "
                  "RETURNING id")


def test_the_runtime_role_inserts_unchained_and_links_only_through_the_chain_function(roles_database):
    with _as(APP, APP_PASSWORD) as app:
        # A row that arrives linked would skip the chainer: refused by the insert trigger.
        with pytest.raises(errors.InsufficientPrivilege, match="inserted unchained"):
            app.execute("INSERT INTO workflows_auditevent (created_at, actor_label, action, object_type, object_id, "
                        "payload, request_id, seq, prev_hash, hash) VALUES (now(), 'x', 'auth.denied', 't', '1', "
                        "'{}', '', 999999, repeat('0', 64), repeat('1', 64))")
        (pk,) = app.execute(_UNCHAINED_ROW, ["a"]).fetchone()
        # Linking it by hand needs UPDATE, which the runtime role does not have.
        with pytest.raises(errors.InsufficientPrivilege, match="permission denied"):
            app.execute("UPDATE workflows_auditevent SET seq = 999999, prev_hash = repeat('0', 64), "
                        "hash = repeat('2', 64) WHERE id = %s", [pk])
        linked = app.execute("SELECT event_id, event_seq FROM reviewdesk_audit_chain(%s, %s)",
                             [[pk], ['{"x":1}']]).fetchall()
        assert len(linked) == 1 and linked[0][0] == pk
        # Linked once: a second call skips it, and nothing may change it afterwards.
        assert app.execute("SELECT count(*) FROM reviewdesk_audit_chain(%s, %s)", [[pk], ['{"x":2}']]).fetchone() == (0,)
    with _admin(DATABASE) as admin:
        # Not even the owner's rights (a superuser here) get past the trigger: the links are set
        # once, from NULL, and every other column must stay as it was.
        for statement in ("UPDATE workflows_auditevent SET hash = repeat('3', 64) WHERE id = %s",
                          "UPDATE workflows_auditevent SET seq = NULL, prev_hash = NULL, hash = NULL WHERE id = %s",
                          "DELETE FROM workflows_auditevent WHERE id = %s"):
            with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
                admin.execute(statement, [pk])
        (other,) = admin.execute(_UNCHAINED_ROW, ["b"]).fetchone()
        with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
            admin.execute("UPDATE workflows_auditevent SET seq = 999998, prev_hash = repeat('0', 64), "
                          "hash = repeat('4', 64), action = 'review.approved' WHERE id = %s", [other])


def test_tables_of_later_migrations_reach_the_runtime_role(roles_database):
    """Default privileges: a table the owner creates later is readable and appendable at once;
    UPDATE and DELETE follow from the grant step that `migrate` runs after its migrations."""
    with _as(OWNER, OWNER_PASSWORD) as owner:
        owner.execute("CREATE TABLE workflows_later (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text)")
    try:
        with _as(APP, APP_PASSWORD) as app:
            app.execute("INSERT INTO workflows_later (v) VALUES ('a')")
            assert app.execute("SELECT v FROM workflows_later").fetchall() == [("a",)]
            with pytest.raises(errors.InsufficientPrivilege):
                app.execute("UPDATE workflows_later SET v = 'b'")
        manage("migrate", "--noinput")
        with _as(APP, APP_PASSWORD) as app:
            app.execute("UPDATE workflows_later SET v = 'b'")
            app.execute("DELETE FROM workflows_later")
            with pytest.raises(errors.InsufficientPrivilege):
                app.execute("TRUNCATE workflows_later")
    finally:
        with _as(OWNER, OWNER_PASSWORD) as owner:
            owner.execute("DROP TABLE workflows_later")


def test_migrate_refuses_an_owner_url_for_another_database(roles_database):
    result = manage("migrate", "--noinput", migrate_url=_url(OWNER, OWNER_PASSWORD, "postgres"), check=False)
    assert result.returncode != 0
    assert "both must name the same PostgreSQL database" in result.stderr


def test_migrate_as_the_runtime_role_alone_is_refused(roles_database):
    """Without the owner's URL, DDL as the runtime role fails: it cannot migrate the schema."""
    with _as(APP, APP_PASSWORD) as app, pytest.raises(errors.InsufficientPrivilege):
        app.execute("CREATE INDEX sneaky ON workflows_auditevent (action)")


def test_a_database_migrated_by_a_superuser_is_taken_over():
    """An existing deployment (docker-compose.yml before the roles) migrated as its superuser:
    setup_db_roles hands every object to the owner, and the runtime role then owns nothing and
    is refused on the audit table. Its own database and roles, dropped at the end."""
    database, owner, app = f"{DATABASE}_old", f"{OWNER}_old", f"{APP}_old"
    superuser_url = f"{_server()}/{database}"
    env = {**os.environ, "DATABASE_URL": superuser_url, "DJANGO_DEBUG": "true"}
    env.pop("DATABASE_MIGRATE_URL", None)
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env,
                       check=True, capture_output=True, timeout=300)
        env.update(DATABASE_URL=_url(app, "a", database), DATABASE_MIGRATE_URL=_url(owner, "o", database))
        setup = subprocess.run([sys.executable, "manage.py", "setup_db_roles", "--admin-url", superuser_url],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert setup.returncode == 0, setup.stderr
        assert "objects handed over to it" in setup.stdout
        with psycopg.connect(superuser_url, autocommit=True) as admin, admin.cursor() as cursor:
            assert db_roles.owned_by(cursor, app) == []
            cursor.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                           "WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) <> %s", [owner])
            assert cursor.fetchone() == (0,)
            cursor.execute("SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname LIKE 'reviewdesk_audit%%'")
            assert {row[0] for row in cursor.fetchall()} == {owner}
        with psycopg.connect(_url(app, "a", database), autocommit=True) as runtime:
            assert runtime.execute("SELECT count(*) FROM workflows_auditevent").fetchone()[0] >= 0
            for statement in ("DELETE FROM workflows_auditevent", "TRUNCATE workflows_auditevent",
                              "ALTER TABLE workflows_auditevent DISABLE TRIGGER ALL"):
                with pytest.raises(errors.InsufficientPrivilege, match="permission denied|must be owner"):
                    runtime.execute(statement)
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            for role in (app, owner):
                admin.execute(f'DROP ROLE IF EXISTS "{role}"')
