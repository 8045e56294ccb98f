"""A cursor whose statements PostgreSQL prepares once per connection (the pool keeps them).

Django's own cursors bind parameters on the client and are never prepared, and Django sets
psycopg's prepare_threshold to None on its connections (for transaction-mode poolers), which
turns preparation off altogether. For a statement run all day whose planning is a large part of
its cost (Next's claim: ~1 ms of the server's ~2.2), prepared_cursor() binds on the server and
asks psycopg to prepare; after five custom plans PostgreSQL (plan_cache_mode auto) runs it from
a generic plan while that is estimated no dearer. The statement must be written so that the
generic plan is a good one (see services.reviews._claim_sql). It is Django's cursor wrapper
around it, so execute wrappers (db_resilience, query capture in tests) see the statement as any
other. Behind PgBouncer in transaction mode prepared statements need PgBouncer 1.22+ with
max_prepared_statements.
"""
import psycopg
from django.db import connection
from django.db.backends.postgresql.base import ServerBindingCursor


class _LoggedQuery:
    """The statement with its values, composed only when read: psycopg keeps no query text for a
    prepared execution, and Django's query log (DEBUG, the tests' query capture) reads it from
    cursor._query.query."""

    def __init__(self, conn, query, params):
        self.conn, self.text, self.params = conn, query, params

    @property
    def query(self) -> bytes:
        return psycopg.ClientCursor(self.conn).mogrify(self.text, self.params).encode()


class _PreparingCursor(ServerBindingCursor):
    def execute(self, query, params=None, **kwargs):
        # The threshold is set for this execution only: a connection with one keeps the text
        # of its last hundred statements for counting (a megabyte each for the audit
        # chainer's). What was prepared stays prepared; psycopg drops it on a rollback.
        conn = self.connection
        configured = conn.prepare_threshold
        if configured is None:
            conn.prepare_threshold = 5
        try:
            return super().execute(query, params, prepare=True)
        finally:
            conn.prepare_threshold = configured
            self._query = _LoggedQuery(conn, query, params)


def prepared_cursor():
    """A cursor on the default connection whose statements are prepared (PostgreSQL only)."""
    connection.ensure_connection()
    return connection._prepare_cursor(_PreparingCursor(connection.connection))
