"""`manage.py migrate` as the owner role when DATABASE_MIGRATE_URL is set.

Every process reads DATABASE_URL (the runtime role, which owns nothing and cannot run DDL).
When DATABASE_MIGRATE_URL is set too, which docker-compose.yml does for its one-shot `migrate`
service only, this command connects to the same database as that owner role instead, applies
the migrations, and then grants the runtime role (DATABASE_URL's user) its privileges on
whatever the migrations created (workflows/db_roles.py). Without DATABASE_MIGRATE_URL (`make
run`, the test suite, a single-role deployment) it is Django's migrate, unchanged.
docs/ARCHITECTURE.md ("Database roles") says why the command and not a second alias.
"""
import dj_database_url
from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands import migrate
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction

from workflows import db_roles


def use_owner_connection(alias: str, owner_url: str) -> tuple[str, str]:
    """Point connection ``alias`` at the owner role; returns (owner, runtime role)."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        raise CommandError("DATABASE_MIGRATE_URL is for PostgreSQL; DATABASE_URL is not a PostgreSQL URL.")
    try:
        owner = dj_database_url.parse(owner_url)
    except Exception as exc:  # dj_database_url raises several types for a malformed URL
        raise CommandError(f"DATABASE_MIGRATE_URL is not a valid database URL: {exc}") from None
    current = connection.settings_dict
    # The test runner renames the database it migrates; refusing a different name here keeps
    # an owner URL in the environment from ever migrating another database than this one.
    if owner["ENGINE"] != current["ENGINE"] or owner["NAME"] != current["NAME"]:
        raise CommandError(
            f"DATABASE_MIGRATE_URL names database {owner['NAME']!r}, but this command migrates "
            f"{current['NAME']!r} (DATABASE_URL): both must name the same PostgreSQL database."
        )
    runtime = current["USER"]
    if not owner["USER"] or owner["USER"] == runtime:
        raise CommandError(
            "DATABASE_MIGRATE_URL must log in as the owner role, another role than DATABASE_URL's "
            f"({runtime!r}); see docs/OPERATIONS.md, 'Database roles'."
        )
    connection.close()
    # Close a pool opened with the runtime role's credentials (asking `connection.pool` would
    # open one just to close it).
    if alias in getattr(connection, "_connection_pools", {}):
        connection.close_pool()
    for key in ("USER", "PASSWORD", "HOST", "PORT"):
        current[key] = owner[key]
    # A one-shot command needs no pool of owner connections; the owner URL's own options
    # (?sslmode=require, ...) apply to its connection.
    options = {k: v for k, v in current.get("OPTIONS", {}).items() if k != "pool"}
    current["OPTIONS"] = {**options, **owner.get("OPTIONS", {})}
    return owner["USER"], runtime


class Command(migrate.Command):
    help = (
        migrate.Command.help
        + " With DATABASE_MIGRATE_URL set, connects as that (owner) role and then grants DATABASE_URL's "
        "role its runtime privileges."
    )

    def handle(self, *args, **options):
        owner_url = settings.DATABASE_MIGRATE_URL
        alias = options["database"]
        if not owner_url or alias != DEFAULT_DB_ALIAS:
            return super().handle(*args, **options)
        owner, runtime = use_owner_connection(alias, owner_url)
        super().handle(*args, **options)
        if options["plan"] or options["check_unapplied"]:
            return
        connection = connections[alias]
        try:
            with transaction.atomic(using=alias), connection.cursor() as cursor:
                raw = cursor.cursor  # psycopg's own cursor: the grants are composed with psycopg.sql
                db_roles.runtime_grants(raw, owner=owner, app=runtime, schema=db_roles.current_schema(raw))
        except DatabaseError as exc:
            raise CommandError(
                f"Migrated, but granting {runtime} its privileges as {owner} failed: {exc}. Does {owner} own "
                f"the tables? Run `manage.py setup_db_roles --admin-url <superuser URL>` once."
            ) from None
        if options["verbosity"] >= 1:
            self.stdout.write(f"Granted {runtime} its runtime privileges (as {owner}).")
