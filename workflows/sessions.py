"""Django's database session engine, loading the session with a statement written once.

Every request loads its session first. Django's engine builds that query with the ORM each time
(Session.objects.get(session_key=..., expire_date__gt=now)): ~0.5 ms of CPU per request, where
the same SELECT written once costs ~0.1 ms (measured in-process, stop 16). Rows, encoding,
expiry, saving and the async path are Django's, unchanged: sessions written by Django's engine
load here and the other way round. settings.SESSION_ENGINE names this module.
"""
import functools

from django.contrib.sessions.backends import db
from django.db import connections, router
from django.utils import timezone


class SessionStore(db.SessionStore):
    def _get_session_from_db(self):
        key = self.session_key
        if key is None:
            return None
        alias = router.db_for_read(self.model)
        conn = connections[alias]
        now = conn.ops.adapt_datetimefield_value(timezone.now())  # as the ORM passes it (SQLite: text)
        with conn.cursor() as cursor:
            cursor.execute(_load_sql(alias), [key, now])
            row = cursor.fetchone()
        if row is None:  # unknown or expired: Django's engine forgets the key and starts anew
            self._session_key = None
            return None
        return self.model.from_db(alias, ("session_key", "session_data", "expire_date"), (key, *row))


@functools.cache
def _load_sql(alias: str) -> str:
    from django.contrib.sessions.models import Session

    q = connections[alias].ops.quote_name
    meta = Session._meta
    data, expires = meta.get_field("session_data").column, meta.get_field("expire_date").column
    return (f"SELECT {q(data)}, {q(expires)} FROM {q(meta.db_table)} "
            f"WHERE {q(meta.pk.column)} = %s AND {q(expires)} > %s")
