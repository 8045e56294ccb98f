"""Hostile input to every form, generated with hypothesis: never a 500, and nothing already
saved is lost (DESIGN.md section 10).

Each form-handling view gets bodies built from its own field names plus extra keys, with values
that are NUL bytes, huge strings, odd Unicode, numbers out of every range, malformed dates,
types the field does not expect (lists for scalars: duplicated keys) or nothing at all. A 4xx
with a message or a normal page is fine; a 5xx fails, and so does any change to data that a
refused request must not touch.

Reproducible in CI: `derandomize=True` (examples come from a fixed seed, not the clock) and
no example database, with a bounded `max_examples` per view. Every example runs inside a
savepoint that is rolled back, so each starts from the same rows (a valid decision that hypothesis
happens to generate would otherwise close the review for the examples after it).
"""
from __future__ import annotations

import os
import string

import pytest
from django.db import transaction
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflows.models import AuditEvent, ReviewTask, Submission

# FUZZ_EXAMPLES / FUZZ_RANDOM=1 widen a run by hand (a longer, randomised hunt); CI keeps the
# fixed, bounded default.
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "25")),
    deadline=None,
    derandomize=os.environ.get("FUZZ_RANDOM") != "1",
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

NASTY = [
    "", " ", "\x00", "a\x00b", "\x00" * 10, "\r\n", "\t=1+1", "null", "None", "true", "[]", "{}", "{\"a\": 1}",
    "NaN", "-NaN", "Infinity", "-Infinity", "1e99999", "-1e99999", "1e-99999", "0x10", "1_000", "١٢٣", "٣",
    "-1", "-0", "0", "2147483648", "-9223372036854775809", "9" * 40, "-" + "9" * 400, "1" * 5000,
    "12345678901234567890.123456789", "1,5", "1.5.5",
    "2024-02-30", "2024-13-01", "0000-00-00", "99999-01-01", "-0001-01-01", "2024-01-01T25:61:61",
    "2024-01-01T10:00:00+99:00", "1970-01-01T00:00:00Z", "now", "9999-12-31T23:59:59.999999",
    "<script>alert(1)</script>", "' OR 1=1 --", "${jndi:ldap://x}", "{{ 7*7 }}", "%s%s%n", "../../etc/passwd",
    "\u202eevil", "\ufeff", "\U0001f4a9" * 100, "e\u0301", "\u0000\u0001\u001f\u007f", "\ud7ff", "\uffff",
    "a@b@c", "@", "x@" + "y" * 300 + ".com", "blocking_review", "async_review", "approved",
]

scalar = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=40),  # any Unicode but surrogates (which no HTTP client can send), NUL included
    st.text(alphabet=string.printable, max_size=20),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.dates().map(str),
    st.datetimes().map(lambda d: d.isoformat()),
    st.integers(min_value=1_000, max_value=300_000).map(lambda n: "x" * n),  # huge strings
)
# A list is a key sent several times (duplicated keys); an empty list sends the key not at all.
value = st.one_of(scalar, st.lists(scalar, max_size=3))


def bodies(field_names, extra=()):
    keys = st.sampled_from(sorted(set(field_names) | set(extra) | {"junk", "", "nav", "page", "csrfmiddlewaretoken"}))
    return st.dictionaries(st.one_of(keys, st.text(max_size=12)), value, max_size=len(field_names) + 3)


def _post(client, path, body, htmx):
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post(path, body, headers=headers)


def _assert_no_server_error(response, where):
    assert response.status_code < 500, f"{where}: {response.status_code}"
    if response.status_code >= 400:
        # A refusal says why: a page with a message, not an empty body.
        assert response.content.strip(), f"{where}: {response.status_code} with no message"


def _kept(submission_ids):
    """The rows a refused request must not change."""
    return (
        list(Submission.objects.filter(pk__in=submission_ids).order_by("pk")
             .values_list("pk", "state", "data", "final_output", "released_at")),
        list(ReviewTask.objects.filter(submission_id__in=submission_ids).order_by("pk")
             .values_list("pk", "state", "decision", "claimed_by", "edited_output")),
    )


# --- The guided forms ---------------------------------------------------------------------

WIZARD_STEPS = [(slug, step) for slug, steps in
                (("customer-reply", 2), ("compliance-report", 3), ("underwriting-memo", 2)) for step in range(1, steps + 1)]


@pytest.mark.parametrize("slug, step", WIZARD_STEPS, ids=[f"{s}-{n}" for s, n in WIZARD_STEPS])
def test_wizard_steps_survive_hostile_input(slug, step, demo, people, routed):
    version = demo.version(slug)
    steps = version.spec.form.steps
    assert len(steps) >= step, "the demo workflow has this step"
    names = [f.name for f in steps[step - 1].fields]
    other_names = [f.name for i, s in enumerate(steps) if i != step - 1 for f in s.fields]
    earlier = routed(people["submitter"])  # a submission already saved by this user
    path = f"/workflows/{slug}/new/{step}/"
    key = f"wizard:{version.pk}"

    @FUZZ
    @given(body=bodies(names, extra=other_names), htmx=st.booleans())
    def run(body, htmx):
        with transaction.atomic():
            client = Client()
            client.force_login(people["submitter"])
            # What the user typed on the other steps is in the session before the hostile post.
            typed = {name: f"typed {name}" for name in other_names}
            session = client.session
            session[key] = dict(typed)
            session.save()
            kept, events = _kept([earlier.pk]), AuditEvent.objects.count()
            response = _post(client, path, body, htmx)
            _assert_no_server_error(response, f"POST {path} {body!r:.300}")
            assert response.status_code in (200, 302, 422), response.status_code
            # Nothing typed on another step is lost, and the step still renders.
            stored = client.session.get(key, {})
            assert {k: stored.get(k) for k in typed} == typed
            assert client.get(path).status_code == 200
            assert _kept([earlier.pk]) == kept
            assert AuditEvent.objects.count() >= events
            if response.status_code == 422:
                assert b'class="error"' in response.content, "a refused step says what is wrong"
            transaction.set_rollback(True)

    run()


def test_final_step_with_a_tampered_session_never_fails(demo, people):
    """The session is not trusted: junk in it (put there by an older version of a form, say)
    sends the user back to the step that needs attention, never to a 500."""
    version = demo.version("customer-reply")
    names = [f.name for s in version.spec.form.steps for f in s.fields]

    @FUZZ
    @given(raw=st.dictionaries(st.sampled_from(names + ["extra"]), st.one_of(scalar, st.lists(scalar, max_size=2),
                                                                              st.integers(), st.none(), st.booleans())))
    def run(raw):
        with transaction.atomic():
            client = Client()
            client.force_login(people["submitter"])
            session = client.session
            session[f"wizard:{version.pk}"] = raw
            session.save()
            before = Submission.objects.count()
            response = client.post("/workflows/customer-reply/new/2/",
                                   {"complaint": "It broke.", "order_value": "10"})
            _assert_no_server_error(response, f"final step with session {raw!r:.300}")
            assert Submission.objects.count() in (before, before + 1)
            transaction.set_rollback(True)

    run()


# --- Review decisions, claim and release ---------------------------------------------------

DECISION_FIELDS = {
    "claim": ["edited_output"],
    "release": [],
    "approve": ["edited_output"],
    "reject": ["reason_code", "reason_text"],
    "regenerate": ["feedback"],
}


@pytest.mark.parametrize("action", DECISION_FIELDS)
@pytest.mark.parametrize("claimed", [True, False], ids=["claimed", "unclaimed"])
def test_review_actions_survive_hostile_input(action, claimed, people, routed):
    mine = routed(people["submitter"])
    bystander = routed(people["other_submitter"], lane="async_review")
    task = ReviewTask.objects.get(submission=mine)
    path = f"/review/{task.pk}/{action}/"

    @FUZZ
    @given(body=bodies(DECISION_FIELDS[action], extra=["edited_output", "reason_code", "reason_text", "feedback"]),
           htmx=st.booleans())
    def run(body, htmx):
        with transaction.atomic():
            client = Client()
            client.force_login(people["reviewer_a"])
            if claimed:
                assert client.post(f"/review/{task.pk}/claim/").status_code == 302
            kept, events = _kept([mine.pk]), AuditEvent.objects.count()
            others = _kept([bystander.pk])
            response = _post(client, path, body, htmx)
            _assert_no_server_error(response, f"POST {path} {body!r:.300}")
            if response.status_code >= 400:
                assert response.status_code in (409, 422), response.status_code
                assert _kept([mine.pk]) == kept, "a refused decision changed the review"
                assert AuditEvent.objects.count() == events
            assert _kept([bystander.pk]) == others, "another submission changed"
            transaction.set_rollback(True)

    run()


def test_retry_survives_hostile_input(people, routed):
    submission = routed(people["submitter"])

    @FUZZ
    @given(body=bodies(["reason"]), who=st.sampled_from(["submitter", "reviewer_a", "compliance"]))
    def run(body, who):
        with transaction.atomic():
            client = Client()
            client.force_login(people[who])
            kept = _kept([submission.pk])
            response = client.post(f"/submissions/{submission.pk}/retry/", body)
            _assert_no_server_error(response, f"retry {body!r:.300}")
            assert response.status_code == 409 and _kept([submission.pk]) == kept  # not failed: nothing to retry
            transaction.set_rollback(True)

    run()


# --- Lists, filters and exports (query strings) --------------------------------------------

AUDIT_FILTERS = ["since", "until", "workflow", "actor", "action", "submission", "page"]


def _get(client, path, query):
    response = client.get(path, query)
    if response.streaming:
        # An export fails, if it fails, while streaming: read it to the end.
        b"".join(response.streaming_content)
    return response


@pytest.mark.parametrize("path, fields, who", [
    ("/audit/", AUDIT_FILTERS, "compliance"),
    ("/audit/export/", AUDIT_FILTERS + ["format", "upto"], "compliance"),
    ("/audit/export/manifest/", AUDIT_FILTERS + ["format", "upto"], "compliance"),
    ("/review/", ["lane", "page"], "reviewer_a"),
    ("/submissions/", ["page"], "compliance"),
    ("/", ["page"], "submitter"),
], ids=["audit", "export", "manifest", "queue", "submissions", "home"])
def test_list_and_export_queries_survive_hostile_input(path, fields, who, people, routed):
    saved = routed(people["submitter"])

    @FUZZ
    @given(query=bodies(fields, extra=["format"]), htmx=st.booleans())
    def run(query, htmx):
        with transaction.atomic():
            client = Client()
            client.force_login(people[who])
            kept, events = _kept([saved.pk]), AuditEvent.objects.count()
            response = _get(client, path, query) if not htmx else client.get(path, query, headers={"HX-Request": "true"})
            if htmx and response.streaming:
                b"".join(response.streaming_content)
            _assert_no_server_error(response, f"GET {path} {query!r:.300}")
            assert response.status_code in (200, 400), response.status_code
            assert _kept([saved.pk]) == kept
            # Only an export adds to the trail (its own audit.exported event); nothing is removed.
            assert AuditEvent.objects.count() - events in ((0, 1) if "export" in path else (0,))
            transaction.set_rollback(True)

    run()


def test_evidence_survives_hostile_ids_and_queries(people, routed):
    saved = routed(people["submitter"])

    @FUZZ
    @given(pk=st.one_of(st.just(saved.pk), st.integers(min_value=0, max_value=10**30)),
           kind=st.sampled_from(["evidence/", "evidence.json"]), query=bodies(["format", "page"]),
           who=st.sampled_from(["submitter", "other_submitter", "reviewer_a", "reviewer_b", "compliance"]))
    def run(pk, kind, query, who):
        with transaction.atomic():
            client = Client()
            client.force_login(people[who])
            response = client.get(f"/submissions/{pk}/{kind}", query)
            _assert_no_server_error(response, f"evidence {pk} {query!r:.200}")
            assert response.status_code in (200, 404)
            transaction.set_rollback(True)

    run()


# --- Logging in ------------------------------------------------------------------------------

def test_login_survives_hostile_input(people):
    @FUZZ
    @given(body=bodies(["username", "password", "next"]), htmx=st.booleans())
    def run(body, htmx):
        with transaction.atomic():
            client = Client()
            response = _post(client, "/accounts/login/", body, htmx)
            _assert_no_server_error(response, f"login {body!r:.300}")
            # No generated password is a real one: always refused, with the form again.
            assert response.status_code == 422 and b'class="error"' in response.content
            assert "_auth_user_id" not in client.session
            transaction.set_rollback(True)

    run()
