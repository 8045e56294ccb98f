"""Django's ModelBackend, reading a session's user and their groups in one statement.

Every page checks a role (roles.has_role, a group name) and the review pages scope by group id
(roles.group_ids): that was a third statement on every request after the session and the user,
~1 ms of the Next button's ~6 in-process. Here the user's row comes with two arrays, the ids
and names of their groups, and roles.prime() fills the per-request cache that roles reads.

The statement is written once per process from the user model's metadata and prepared
(db_prepared), not built by the ORM on each request: compiling the annotated query (two
filtered ARRAY_AGGs over a join) cost ~1.4-1.9 ms of CPU per request, the raw statement
~0.1 ms, and every authenticated request pays it (measured in-process, stop 16).
Authentication (the password check) is Django's, unchanged.
"""
import functools

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend as DjangoModelBackend
from django.db import connection

from . import roles
from .db_prepared import prepared_cursor


@functools.cache
def _user_statement() -> tuple[str, tuple[str, ...]]:
    """The SELECT of one user with their group ids and names, and the user's field names in
    the order of its columns (for Model.from_db)."""
    User = get_user_model()
    q = connection.ops.quote_name
    fields = User._meta.concrete_fields
    groups = User._meta.get_field("groups")
    group_table = q(groups.related_model._meta.db_table)
    group_pk = q(groups.related_model._meta.pk.column)
    link = q(groups.m2m_db_table())
    columns = ", ".join(f"u.{q(f.column)}" for f in fields)
    sql = (f"SELECT {columns}, "
           f"COALESCE(ARRAY_AGG(g.{group_pk}) FILTER (WHERE g.{group_pk} IS NOT NULL), '{{}}'), "
           f"COALESCE(ARRAY_AGG(g.{q('name')}) FILTER (WHERE g.{group_pk} IS NOT NULL), '{{}}') "
           f"FROM {q(User._meta.db_table)} u "
           f"LEFT JOIN {link} ug ON ug.{q(groups.m2m_column_name())} = u.{q(User._meta.pk.column)} "
           f"LEFT JOIN {group_table} g ON g.{group_pk} = ug.{q(groups.m2m_reverse_name())} "
           f"WHERE u.{q(User._meta.pk.column)} = %s GROUP BY u.{q(User._meta.pk.column)}")
    return sql, tuple(f.attname for f in fields)


class ModelBackend(DjangoModelBackend):
    def get_user(self, user_id):
        if connection.vendor != "postgresql":
            return super().get_user(user_id)  # SQLite (make run): roles reads the groups itself
        sql, names = _user_statement()
        with prepared_cursor() as cursor:
            cursor.execute(sql, [user_id])
            row = cursor.fetchone()
        if row is None:
            return None
        user = get_user_model().from_db(connection.alias, names, row[: len(names)])
        roles.prime(user, row[-2], row[-1])
        return user if self.user_can_authenticate(user) else None
