"""Login throttling (django-axes, issue 10): N failed log-ins for one username from one address
block that pair, even with the right password, with a plain message and a 429; the lockout and
the failures are audit events without the password; the block ends with the cool-off or an
administrator's reset; other users and other addresses are not affected."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.core.cache import caches
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from tests.views.html import Page
from workflows import audit
from workflows.models import AuditEvent

LIMIT = 3
ADDRESS, OTHER_ADDRESS = "203.0.113.7", "198.51.100.9"
WRONG = "not-the-password-Zq81"


@pytest.fixture
def victim(make_user):
    return make_user("lockout-victim", "submitter")


@pytest.fixture(autouse=True)
def _small_limit(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT
    # This minute's count of failed-log-in events for the addresses used here starts at zero
    # (only these keys: the cache is shared with other runs).
    caches[settings.REVIEWDESK_DRAFT_CACHE].delete_many([f"login_failed:ip:{a}" for a in (ADDRESS, OTHER_ADDRESS)])


def _client(address=ADDRESS) -> Client:
    return Client(REMOTE_ADDR=address)


def _login(client, username, password):
    return client.post("/accounts/login/", {"username": username, "password": password})


def _logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def _events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def _assert_locked_page(response):
    assert response.status_code == 429
    assert response["Retry-After"] == "900"
    page = Page(response)
    message = page.by_id("login-locked-out")
    assert "Too many failed log-ins" in message.text and "15 minutes" in message.text
    assert b"Traceback" not in response.content
    # The page is the log-in form again, ready for a later try.
    assert page.by_id("id_username") is not None and page.by_id("id_password") is not None


def test_failures_lock_the_pair_out_and_the_right_password_is_refused(victim):
    client = _client()
    for _ in range(LIMIT - 1):
        response = _login(client, victim.username, WRONG)
        assert response.status_code == 422
        assert "didn't match" in Page(response).all("p", class_="error")[0].text
    _assert_locked_page(_login(client, victim.username, WRONG))

    response = _login(client, victim.username, "pw-" + victim.username)
    _assert_locked_page(response)
    assert not _logged_in(client)

    # One lockout event, naming the account but holding neither password nor typed username.
    (locked,) = _events("auth.locked_out")
    assert (locked.object_type, locked.object_id) == ("user", str(victim.pk))
    assert locked.actor_id is None and locked.ip == ADDRESS
    assert locked.payload["failures"] == LIMIT and locked.payload["failure_limit"] == LIMIT
    assert locked.payload["cool_off_minutes"] == 15 and locked.payload["known_user"] is True
    failed = _events("auth.login_failed")
    # The failures before the lockout, and the refused right password (marked as refused).
    assert len(failed) == LIMIT
    assert [e.payload.get("refused_during_lockout", False) for e in failed] == [False] * (LIMIT - 1) + [True]
    for event in [locked, *failed]:
        facts = audit.canonical_json(audit._hashed_fields(event))
        assert WRONG not in facts and "pw-" + victim.username not in facts, facts
        assert victim.username not in str(event.payload)
    audit.chain_now()  # events are linked after their commit (migration 0012)
    assert audit.verify_chain().ok


def test_a_try_during_the_lockout_does_not_extend_it(victim):
    client = _client()
    for _ in range(LIMIT):
        _login(client, victim.username, WRONG)
    started = AccessAttempt.objects.get(username=victim.username).attempt_time
    _assert_locked_page(_login(client, victim.username, WRONG))
    attempt = AccessAttempt.objects.get(username=victim.username)
    assert attempt.attempt_time == started and attempt.failures_since_start == LIMIT
    assert len(_events("auth.locked_out")) == 1


def test_the_block_ends_with_the_cool_off(victim):
    client = _client()
    for _ in range(LIMIT):
        _login(client, victim.username, WRONG)
    _assert_locked_page(_login(client, victim.username, "pw-" + victim.username))
    # Sixteen minutes later (the cool-off is fifteen): the right password works again.
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    response = _login(client, victim.username, "pw-" + victim.username)
    assert response.status_code == 302 and _logged_in(client)
    assert not AccessAttempt.objects.filter(username=victim.username).exists()


def test_an_administrator_lifts_the_block(victim):
    client = _client()
    for _ in range(LIMIT):
        _login(client, victim.username, WRONG)
    call_command("axes_reset_username", victim.username, stdout=open("/dev/null", "w"))
    response = _login(client, victim.username, "pw-" + victim.username)
    assert response.status_code == 302 and _logged_in(client)


def test_other_users_and_other_addresses_are_not_affected(victim, make_user):
    other = make_user("lockout-bystander", "submitter")
    for _ in range(LIMIT):
        _login(_client(), victim.username, WRONG)
    _assert_locked_page(_login(_client(), victim.username, "pw-" + victim.username))
    # Another user from the same address logs in.
    bystander = _client()
    assert _login(bystander, other.username, "pw-" + other.username).status_code == 302 and _logged_in(bystander)
    # The same user from another address (the lockout is per username and address) logs in too.
    elsewhere = _client(OTHER_ADDRESS)
    assert _login(elsewhere, victim.username, "pw-" + victim.username).status_code == 302
    assert _logged_in(elsewhere)


def test_a_successful_log_in_resets_the_count(victim):
    client = _client()
    for _ in range(LIMIT - 1):
        _login(client, victim.username, WRONG)
    assert _login(client, victim.username, "pw-" + victim.username).status_code == 302
    client = _client()
    for _ in range(LIMIT - 1):
        assert _login(client, victim.username, WRONG).status_code == 422
    assert _events("auth.locked_out") == []


def test_an_unknown_username_is_locked_out_the_same_way(db):
    client = _client()
    for _ in range(LIMIT - 1):
        assert _login(client, "no-such-person", WRONG).status_code == 422
    _assert_locked_page(_login(client, "no-such-person", WRONG))
    (locked,) = _events("auth.locked_out")
    assert (locked.object_type, locked.object_id) == ("user", "unknown")
    assert locked.payload["known_user"] is False and "no-such-person" not in str(locked.payload)


def test_a_flood_of_failures_does_not_flood_the_chain(settings, db):
    """Password spraying: one address, many usernames, one try each, never locks a pair; the
    failed-log-in events stop at the per-minute limit while every try is still refused."""
    settings.REVIEWDESK_DENIED_EVENTS_PER_MINUTE = 4
    client = _client()
    for i in range(12):
        assert _login(client, f"sprayed-{i}", WRONG).status_code == 422
    assert len(_events("auth.login_failed")) == 4
    assert _events("auth.locked_out") == []
    # Another address has its own budget.
    assert _login(_client(OTHER_ADDRESS), "sprayed-0", WRONG).status_code == 422
    assert len(_events("auth.login_failed")) == 5


def test_the_admin_log_in_is_throttled_too(victim):
    client = _client()
    for _ in range(LIMIT):
        client.post("/admin/login/", {"username": victim.username, "password": WRONG})
    _assert_locked_page(_login(client, victim.username, "pw-" + victim.username))


SQLITE_SCRIPT = """
import django
django.setup()
from django.core.management import call_command
from django.contrib.auth import get_user_model
from django.test import Client
from workflows.models import AuditEvent
call_command("migrate", verbosity=0)
get_user_model().objects.create_user(username="sqlite-user", password="sqlite-pass-Zq81")
client = Client(REMOTE_ADDR="203.0.113.7")
codes = [client.post("/accounts/login/", {"username": "sqlite-user", "password": "wrong"}).status_code
         for _ in range(5)]
codes.append(client.post("/accounts/login/", {"username": "sqlite-user", "password": "sqlite-pass-Zq81"}).status_code)
print(codes, AuditEvent.objects.filter(action="auth.locked_out").count(), "_auth_user_id" in client.session)
"""


def test_the_lockout_works_on_the_embedded_sqlite_default(tmp_path):
    """`make run` without DATABASE_URL: the same lockout with SQLite (and no Redis)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "REVIEWDESK_"))
           and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DJANGO_SETTINGS_MODULE="reviewdesk.settings", DJANGO_ALLOWED_HOSTS="testserver",
               DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3")
    proc = subprocess.run([sys.executable, "-c", SQLITE_SCRIPT], cwd=Path(__file__).resolve().parents[2], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[422, 422, 422, 422, 429, 429] 1 False"
