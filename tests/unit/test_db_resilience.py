"""What counts as a lost database connection, and how a request that lost one is answered
(the whole behaviour, under gunicorn with terminated backends, is in
tests/integration/test_faults.py)."""
import psycopg
import pytest
from django.db import OperationalError
from django.test import RequestFactory
from psycopg_pool import PoolTimeout

from workflows.db_resilience import is_connection_loss, refusal


def _wrapped(cause):
    try:
        try:
            raise cause
        except psycopg.Error as exc:
            raise OperationalError(str(exc)) from exc
    except OperationalError as exc:
        return exc


@pytest.mark.parametrize("cause, lost", [
    (psycopg.errors.AdminShutdown("terminating connection due to administrator command"), True),
    (psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"), True),
    (psycopg.errors.ConnectionFailure("connection failure"), True),
    (PoolTimeout("couldn't get a connection after 10.00 sec"), False),  # overload, not a loss
    (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), False),
    (psycopg.errors.UniqueViolation("duplicate key"), False),
])
def test_a_lost_connection_is_told_from_other_database_errors(cause, lost):
    assert is_connection_loss(_wrapped(cause)) is lost


def test_a_request_that_lost_its_connection_is_refused_in_words_not_a_500():
    factory = RequestFactory()
    post = refusal(factory.post("/workflows/customer-reply/new/2/"))
    assert post.status_code == 409 and post["Retry-After"] == "1"
    assert b"may not have" in post.content and b"will\nnot create a duplicate" in post.content
    get = refusal(factory.get("/submissions/"))
    assert get.status_code == 503 and b"Nothing was changed" in get.content
