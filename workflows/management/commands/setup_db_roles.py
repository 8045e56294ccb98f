import dj_database_url
import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from workflows import db_roles


class Command(BaseCommand):
    help = (
        "Create or update the PostgreSQL owner role (DATABASE_MIGRATE_URL's user) and runtime role "
        "(DATABASE_URL's user), give the database, its schema and everything in it to the owner, and "
        "grant the runtime role its privileges (default privileges included). Idempotent; run as a "
        "superuser before the first `manage.py migrate`, and again whenever a password changes."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--admin-url", required=True,
            help="URL of a superuser on the application's database (used by this command only, never stored).",
        )

    def handle(self, *args, admin_url, **options):
        app = settings.DATABASES["default"]
        if app["ENGINE"] != "django.db.backends.postgresql":
            raise CommandError("setup_db_roles needs DATABASE_URL to be a PostgreSQL URL.")
        if not settings.DATABASE_MIGRATE_URL:
            raise CommandError("Set DATABASE_MIGRATE_URL to the owner role's URL (docs/OPERATIONS.md, 'Database roles').")
        if not app["USER"]:
            raise CommandError("DATABASE_URL must name the runtime role (postgres://ROLE:PASSWORD@host/db).")
        try:
            owner = dj_database_url.parse(settings.DATABASE_MIGRATE_URL)
            admin = dj_database_url.parse(admin_url)
        except Exception as exc:  # dj_database_url raises several types for a malformed URL
            raise CommandError(f"Not a valid database URL: {exc}") from None
        names = {"DATABASE_URL": app["NAME"], "DATABASE_MIGRATE_URL": owner["NAME"], "--admin-url": admin["NAME"]}
        if len(set(names.values())) != 1:
            raise CommandError(f"The URLs must name one database: {names}.")
        params = {"host": admin["HOST"] or None, "port": admin["PORT"] or None, "user": admin["USER"] or None,
                  "password": admin["PASSWORD"] or None, "dbname": admin["NAME"]}
        try:
            with psycopg.connect(**{k: v for k, v in params.items() if v is not None}) as conn:
                done = db_roles.setup_roles(
                    conn,
                    owner=db_roles.RoleSpec(owner["USER"], owner["PASSWORD"] or ""),
                    app=db_roles.RoleSpec(app["USER"], app["PASSWORD"] or ""),
                )
        except (psycopg.Error, ValueError) as exc:
            raise CommandError(f"setup_db_roles: {exc}") from None
        for line in done:
            self.stdout.write(line)
