"""The session's user comes with their groups in one statement (workflows.auth_backends), read
fresh on every request: a role taken away applies at the next request, an account made inactive
is logged out, and a real log-in (password, axes) goes through the same backend."""
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext


def _user_reads(sqls):
    """Statements that read users: the ORM's, or auth_backends' (its table aliased u)."""
    return [s for s in sqls if s.startswith('SELECT "auth_user"."id"') or 'FROM "auth_user" u ' in s]


def _statements(client, url):
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    return response, [q["sql"] for q in ctx.captured_queries]


def test_the_user_and_their_groups_are_one_statement(client, make_user):
    from workflows.roles import REVIEWER

    reviewer = make_user("grouped", REVIEWER, "support-reviewers")
    client.force_login(reviewer)
    response, sqls = _statements(client, "/review/")
    assert response.status_code == 200
    users = _user_reads(sqls)
    assert len(users) == 1 and "auth_user_groups" in users[0] and "ARRAY_AGG" in users[0].upper()
    # Nobody reads the groups by name a second time (roles.has_role takes them from the user).
    assert not [s for s in sqls if s is not users[0] and '"auth_group"."name"' in s]


def test_a_role_taken_away_applies_at_the_next_request(client, make_user):
    from workflows.roles import REVIEWER

    reviewer = make_user("demoted", REVIEWER, "support-reviewers")
    client.force_login(reviewer)
    assert client.get("/review/").status_code == 200
    reviewer.groups.remove(Group.objects.get(name=REVIEWER))
    assert client.get("/review/").status_code in (403, 404)


def test_a_user_without_groups_and_an_inactive_one(client, make_user):
    loner = make_user("loner")
    client.force_login(loner)
    response = client.get("/")
    assert response.status_code == 200 and response.wsgi_request.user.username == "loner"
    assert client.get("/review/").status_code in (403, 404)
    loner.is_active = False
    loner.save(update_fields=["is_active"])
    response = client.get("/review/")
    assert response.status_code == 302 and "/login" in response["Location"]


def test_a_real_log_in_uses_the_same_backend(client, make_user):
    from workflows.roles import REVIEWER

    make_user("typed", REVIEWER, "support-reviewers")
    response = client.post("/accounts/login/", {"username": "typed", "password": "pw-typed"})
    assert response.status_code == 302, response.content[:300]
    assert client.session["_auth_user_backend"] == "workflows.auth_backends.ModelBackend"
    response, sqls = _statements(client, "/review/")
    assert response.status_code == 200 and len(_user_reads(sqls)) == 1


def test_sessions_from_before_the_backend_change_stay_signed_in(client, make_user, settings):
    """Migration 0016 rewrites the backend path that older sessions carry; without it Django
    would end every session at the upgrade (its backend no longer configured)."""
    import importlib

    from django.apps import apps
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from workflows.roles import REVIEWER

    migration = importlib.import_module("workflows.migrations.0016_session_auth_backend")
    reviewer = make_user("old-session", REVIEWER, "support-reviewers")
    data = {SESSION_KEY: str(reviewer.pk), BACKEND_SESSION_KEY: migration.OLD,
            HASH_SESSION_KEY: reviewer.get_session_auth_hash(), "kept": "yes"}
    old = SessionStore()
    old.update(data)
    old.create()
    client.cookies[settings.SESSION_COOKIE_NAME] = old.session_key
    assert client.get("/review/").status_code == 302  # signed out: the old backend is not configured

    migration.forwards(apps, None)
    response = client.get("/review/")
    assert response.status_code == 200 and response.wsgi_request.user == reviewer
    assert SessionStore(old.session_key).load() == {**data, BACKEND_SESSION_KEY: migration.NEW}

    migration.backwards(apps, None)
    assert SessionStore(old.session_key).load() == data


def test_the_session_loads_in_one_statement_and_expired_or_unknown_ones_do_not(client, make_user):
    """workflows.sessions: Django's rows and expiry, a statement written once."""
    from datetime import timedelta

    from django.contrib.sessions.backends.db import SessionStore as DjangoStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from workflows.sessions import SessionStore

    user = make_user("sessioned")
    client.force_login(user)
    response, sqls = _statements(client, "/")
    assert response.status_code == 200 and response.wsgi_request.user == user
    assert len([s for s in sqls if 'FROM "django_session"' in s]) == 1
    key = client.cookies["sessionid"].value
    assert SessionStore(key).load() == DjangoStore(key).load() != {}
    # A session written by Django's own engine loads here too.
    theirs = DjangoStore()
    theirs["colour"] = "teal"
    theirs.create()
    assert SessionStore(theirs.session_key).load() == {"colour": "teal"}
    # Unknown and expired sessions load as empty and forget their key, as Django's do.
    unknown = SessionStore("x" * 32)
    assert unknown.load() == {} and unknown.session_key is None
    Session.objects.filter(session_key=key).update(expire_date=timezone.now() - timedelta(seconds=1))
    expired = SessionStore(key)
    assert expired.load() == {} and expired.session_key is None
    response = client.get("/review/")
    assert response.status_code == 302 and "/login" in response["Location"]
