"""PostgreSQL roles: an owner that migrates, a runtime role that owns nothing.

Two roles share one database (docs/OPERATIONS.md "Database roles"):

* the **owner** (``DATABASE_MIGRATE_URL``) owns the database, the schema and every table,
  sequence and function in it. Only ``manage.py migrate`` connects as it.
* the **runtime** role (``DATABASE_URL``) is what the web, the worker and beat connect as. It
  reads and writes rows and nothing else: SELECT, INSERT, UPDATE, DELETE on the domain tables,
  USAGE on their sequences, EXECUTE on the audit chain function. On the audit table it has
  SELECT and INSERT only, so it cannot change or remove an event, and since it owns nothing it
  cannot TRUNCATE, ALTER, DROP or disable the append-only trigger either (those need ownership
  or privileges it is never given).

Audit events are INSERTed unchained (the runtime role's INSERT); the chainer links them through
``reviewdesk_audit_chain`` (migration 0012), which is SECURITY DEFINER, owned by the owner, with
a pinned search_path: it runs the one UPDATE the trigger allows (seq, prev_hash and hash set once
from NULL, nothing else changed) with the owner's rights, so the runtime role gets EXECUTE on it
and still no UPDATE on the table. Erasure and retention (services/retention.py) update domain
rows and their history, never the audit table.

``runtime_grants`` runs after every migration (workflows/management/commands/migrate.py) and
from ``setup_db_roles``; it is idempotent. Tables that later migrations create get SELECT and
INSERT for the runtime role at once through default privileges, and UPDATE and DELETE from the
grant step that follows the migration in the same command: a new append-only table is never
open to UPDATE, not even for the seconds between the two.
"""
from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

# Tables the runtime role may read and append to, never change: no UPDATE, DELETE, TRUNCATE.
APPEND_ONLY_TABLES = ("workflows_auditevent",)
# Tables the runtime role may only read: the migration history belongs to the owner's step.
READ_ONLY_TABLES = ("django_migrations",)
# Functions the runtime role calls (EXECUTE is revoked from PUBLIC and granted to it alone).
RUNTIME_FUNCTIONS = ("reviewdesk_audit_chain(bigint[], text[])",)
# Relation kinds owned by the owner: tables, partitioned tables, views, materialized views,
# foreign tables (their indexes, row types and identity sequences follow them).
_OWNED_RELKINDS = ("r", "p", "v", "m", "f")


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def _exists(cursor, regclass: str) -> bool:
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [regclass])
    return cursor.fetchone()[0]


def _function_exists(cursor, signature: str) -> bool:
    cursor.execute("SELECT to_regprocedure(%s) IS NOT NULL", [signature])
    return cursor.fetchone()[0]


def current_schema(cursor) -> str:
    cursor.execute("SELECT current_schema()")
    return cursor.fetchone()[0]


def runtime_grants(cursor, *, owner: str, app: str, schema: str) -> None:
    """Give ``app`` exactly the runtime privileges on the objects ``owner`` owns in ``schema``.

    ``cursor`` is a psycopg cursor connected as the owner or as a superuser. Idempotent.
    """
    s, o, a = _ident(schema), _ident(owner), _ident(app)
    run = cursor.execute
    run(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, a))
    run(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(s, a))
    run(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(s, a))
    # TRIGGER would let it add triggers, REFERENCES constrain tables through foreign keys of its own.
    run(sql.SQL("REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA {} FROM {}").format(s, a))
    for table in APPEND_ONLY_TABLES:
        if _exists(cursor, f"{schema}.{table}"):
            run(sql.SQL("REVOKE UPDATE, DELETE ON {}.{} FROM {}").format(s, _ident(table), a))
    for table in READ_ONLY_TABLES:
        if _exists(cursor, f"{schema}.{table}"):
            run(sql.SQL("REVOKE INSERT, UPDATE, DELETE ON {}.{} FROM {}").format(s, _ident(table), a))
    # nextval() through the identity columns needs USAGE; UPDATE (setval) is not given.
    run(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(s, a))
    run(sql.SQL("REVOKE SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(s, a))
    for signature in RUNTIME_FUNCTIONS:
        qualified = f"{schema}.{signature}"
        if _function_exists(cursor, qualified):
            run(sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC").format(sql.SQL(qualified)))
            run(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(qualified), a))
    # Objects the owner creates later (the next migrations): readable and appendable at once;
    # UPDATE and DELETE come from this function, run again right after each migration.
    run(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} REVOKE ALL ON TABLES FROM {}").format(o, s, a))
    run(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT, INSERT ON TABLES TO {}").format(
        o, s, a))
    run(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} REVOKE ALL ON SEQUENCES FROM {}").format(o, s, a))
    run(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT USAGE ON SEQUENCES TO {}").format(o, s, a))


@dataclass(frozen=True)
class RoleSpec:
    name: str
    password: str = ""  # empty: leave the role's password as it is (peer, trust or certificate login)


def _role_exists(cursor, name: str) -> dict | None:
    cursor.execute(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication FROM pg_roles WHERE rolname = %s",
        [name])
    row = cursor.fetchone()
    return None if row is None else dict(zip(("super", "createrole", "createdb", "bypassrls", "replication"), row))


def _ensure_login_role(cursor, role: RoleSpec, *, demote: bool) -> str:
    """Create the role (LOGIN, no special attributes) or bring an existing one in line."""
    ident = _ident(role.name)
    existing = _role_exists(cursor, role.name)
    password = sql.SQL(" PASSWORD {}").format(sql.Literal(role.password)) if role.password else sql.SQL("")
    if existing is None:
        cursor.execute(sql.SQL(
            "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS{}"
        ).format(ident, password))
        return "created"
    cursor.execute(sql.SQL("ALTER ROLE {} LOGIN{}").format(ident, password))
    if demote and any(existing.values()):
        cursor.execute(sql.SQL(
            "ALTER ROLE {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS").format(ident))
        return "updated (superuser, createdb, createrole, replication and bypassrls removed)"
    return "updated"


def _give_schema_objects_to(cursor, *, owner: str, schema: str) -> int:
    """Make ``owner`` the owner of every table, view, sequence and function in ``schema``
    (a database first migrated by another role, e.g. a superuser, is taken over)."""
    changed = 0
    extension_member = (
        "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = {catalog}::regclass AND d.objid = {oid} "
        "AND d.deptype = 'e')"
    )
    cursor.execute(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = ANY(%s) AND pg_get_userbyid(c.relowner) <> %s AND "
        + extension_member.format(catalog="'pg_class'", oid="c.oid"),
        [schema, list(_OWNED_RELKINDS), owner])
    for name, kind in cursor.fetchall():
        keyword = {"v": "VIEW", "m": "MATERIALIZED VIEW", "f": "FOREIGN TABLE"}.get(kind, "TABLE")
        cursor.execute(sql.SQL("ALTER {} {}.{} OWNER TO {}").format(
            sql.SQL(keyword), _ident(schema), _ident(name), _ident(owner)))
        changed += 1
    # Sequences not tied to a table (identity and serial sequences moved with their table).
    cursor.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'S' AND pg_get_userbyid(c.relowner) <> %s AND "
        + extension_member.format(catalog="'pg_class'", oid="c.oid"),
        [schema, owner])
    for (name,) in cursor.fetchall():
        cursor.execute(sql.SQL("ALTER SEQUENCE {}.{} OWNER TO {}").format(_ident(schema), _ident(name), _ident(owner)))
        changed += 1
    cursor.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s AND pg_get_userbyid(p.proowner) <> %s AND "
        + extension_member.format(catalog="'pg_proc'", oid="p.oid"),
        [schema, owner])
    for (signature,) in cursor.fetchall():
        cursor.execute(sql.SQL("ALTER ROUTINE {} OWNER TO {}").format(sql.SQL(signature), _ident(owner)))
        changed += 1
    return changed


def setup_roles(conn, *, owner: RoleSpec, app: RoleSpec) -> list[str]:
    """Create or update both roles and give the database to the owner; run as a superuser.

    ``conn`` is a psycopg connection to the application's database. One transaction: either
    everything is in place afterwards or nothing changed. Returns what was done, for the log.
    """
    if owner.name == app.name:
        raise ValueError(f"the owner and the runtime role are the same role ({owner.name}); give them two roles")
    done = []
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute("SELECT current_user, current_database(), current_schema()")
        admin, database, schema = cursor.fetchone()
        if admin == app.name:
            raise ValueError(f"the admin URL logs in as the runtime role {app.name}; use a superuser")
        if not (_role_exists(cursor, admin) or {}).get("super"):
            raise ValueError(f"{admin} is not a superuser; setup_db_roles needs one (the admin URL)")
        done.append(f"owner role {owner.name}: {_ensure_login_role(cursor, owner, demote=False)}")
        done.append(f"runtime role {app.name}: {_ensure_login_role(cursor, app, demote=True)}")
        # The runtime role must not inherit the owner's rights through membership.
        cursor.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", [app.name, owner.name])
        if cursor.fetchone()[0]:
            cursor.execute(sql.SQL("REVOKE {} FROM {}").format(_ident(owner.name), _ident(app.name)))
            done.append(f"{app.name} is no longer a member of {owner.name}")
        db = _ident(database)
        cursor.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, _ident(owner.name)))
        cursor.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, _ident(app.name)))
        cursor.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(_ident(schema), _ident(owner.name)))
        # PostgreSQL 15 no longer lets every role create in public; older servers still do.
        cursor.execute(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC").format(_ident(schema)))
        moved = _give_schema_objects_to(cursor, owner=owner.name, schema=schema)
        done.append(f"database {database} and schema {schema} owned by {owner.name}"
                    + (f"; {moved} objects handed over to it" if moved else ""))
        runtime_grants(cursor, owner=owner.name, app=app.name, schema=schema)
        done.append(f"{app.name} granted its runtime privileges in {schema}")
    return done


def owned_by(cursor, role: str) -> list[str]:
    """Everything ``role`` owns in the current database (the runtime role: nothing)."""
    cursor.execute(
        """
        SELECT 'database ' || datname FROM pg_database WHERE datname = current_database()
            AND pg_get_userbyid(datdba) = %(r)s
        UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE pg_get_userbyid(nspowner) = %(r)s
        UNION ALL SELECT 'relation ' || relname FROM pg_class WHERE pg_get_userbyid(relowner) = %(r)s
        UNION ALL SELECT 'function ' || oid::regprocedure::text FROM pg_proc WHERE pg_get_userbyid(proowner) = %(r)s
        UNION ALL SELECT 'type ' || typname FROM pg_type WHERE pg_get_userbyid(typowner) = %(r)s
        """,
        {"r": role},
    )
    return [row[0] for row in cursor.fetchall()]
