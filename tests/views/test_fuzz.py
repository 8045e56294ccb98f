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
from datetime import datetime, timedelta, timezone

import pytest
from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.db import transaction
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflows.audit_export import ExportFilterForm, ExportRequestForm
from workflows.forms import ApproveForm, RegenerateForm, RejectForm, step_form_class
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
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01", "9999-12-31",
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
    # With an offset, including the ends of the calendar, where no UTC time exists.
    st.datetimes(timezones=st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
                 .map(lambda delta: timezone(delta))).map(lambda d: d.isoformat()),
    st.integers(min_value=1_000, max_value=300_000).map(lambda n: "x" * n),  # huge strings
)
# A list is a key sent several times (duplicated keys); an empty list sends the key not at all.
value = st.one_of(scalar, st.lists(scalar, max_size=3))


# Values aimed at a field's type, mixed with the general ones above: a date field mostly gets
# dates, including the ends of the calendar with offsets that have no UTC time.
EDGE = st.one_of(
    st.datetimes(max_value=datetime(1, 1, 2)), st.datetimes(min_value=datetime(9999, 12, 30)),
    st.datetimes(),
)
OFFSETS = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)).map(lambda d: timezone(d))
AWARE = st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(), EDGE, OFFSETS)
# The ends of the calendar first: hypothesis tries a one_of's first branch most.
CALENDAR_ENDS = st.sampled_from([
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59.999999",
    "0001-01-01", "9999-12-31", "10000-01-01", "0000-12-31",
])
DATES = st.one_of(
    CALENDAR_ENDS, AWARE, AWARE,
    EDGE.map(lambda d: d.isoformat()), EDGE.map(lambda d: d.strftime("%Y-%m-%d %H:%M")), st.dates().map(str),
)
NUMBERS = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(2**63) - 2, max_value=2**63 + 2).map(str),
)


def _typed(field):
    """A strategy for one Django form field: its own kind of value (valid or nearly), or any."""
    if isinstance(field, (forms.DateTimeField, forms.DateField)):
        own = DATES
    elif isinstance(field, (forms.IntegerField, forms.DecimalField, forms.FloatField)):
        own = NUMBERS
    elif isinstance(field, forms.ChoiceField):
        choices = [str(key) for key, _ in field.choices] or [""]
        own = st.one_of(st.sampled_from(choices), st.sampled_from(choices).map(lambda c: c.upper() + "\x00"),
                        st.lists(st.sampled_from(choices), max_size=4))
    else:
        own = st.one_of(st.text(max_size=200), st.integers(min_value=1, max_value=30_000).map(lambda n: "é" * n))
    return st.one_of(own, own, own, value)


def form_bodies(form_class, extra=()):
    """Bodies for a Django form class: each field present or missing with a value aimed at its
    type, plus keys the form does not expect."""
    return bodies(list(form_class.base_fields), extra, typed={n: _typed(f) for n, f in form_class.base_fields.items()})


def bodies(field_names, extra=(), typed=None):
    """Each of the form's fields present or missing, plus keys it does not expect."""
    typed = typed or {}
    fields = st.fixed_dictionaries({}, optional={name: typed.get(name, value) for name in field_names})
    unknown_keys = st.one_of(st.sampled_from(sorted(set(extra) | {"junk", "", "nav", "page", "csrfmiddlewaretoken"})),
                             st.text(max_size=12))
    extras = st.dictionaries(unknown_keys, value, max_size=3)
    return st.builds(lambda known, more: {**more, **known}, fields, extras)


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
    other_names = [f.name for i, s in enumerate(steps) if i != step - 1 for f in s.fields]
    earlier = routed(people["submitter"])  # a submission already saved by this user
    path = f"/workflows/{slug}/new/{step}/"
    key = f"wizard:{version.pk}"

    @FUZZ
    @given(body=form_bodies(step_form_class(steps[step - 1]), extra=other_names), htmx=st.booleans())
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

DECISION_FORMS = {
    "claim": ApproveForm,  # a re-claim may carry the reviewer's unsaved edit
    "release": forms.Form,
    "approve": ApproveForm,
    "reject": RejectForm,
    "regenerate": RegenerateForm,
}


@pytest.mark.parametrize("action", DECISION_FORMS)
@pytest.mark.parametrize("claimed", [True, False], ids=["claimed", "unclaimed"])
def test_review_actions_survive_hostile_input(action, claimed, people, routed):
    mine = routed(people["submitter"])
    bystander = routed(people["other_submitter"], lane="async_review")
    task = ReviewTask.objects.get(submission=mine)
    path = f"/review/{task.pk}/{action}/"

    @FUZZ
    @given(body=form_bodies(DECISION_FORMS[action], extra=["edited_output", "reason_code", "reason_text", "feedback"]),
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

def _get(client, path, query):
    response = client.get(path, query)
    if response.streaming:
        # An export fails, if it fails, while streaming: read it to the end.
        b"".join(response.streaming_content)
    return response


class PageForm(forms.Form):
    page = forms.IntegerField()


class QueueForm(PageForm):
    lane = forms.ChoiceField(choices=[("blocking_review", ""), ("async_review", ""), ("auto_approve", "")])


class AuditPageForm(ExportFilterForm, PageForm):
    pass


class ExportPageForm(ExportRequestForm, PageForm):
    pass


@pytest.mark.parametrize("path, form, who", [
    ("/audit/", AuditPageForm, "compliance"),
    ("/audit/export/", ExportPageForm, "compliance"),
    ("/audit/export/manifest/", ExportPageForm, "compliance"),
    ("/review/", QueueForm, "reviewer_a"),
    ("/submissions/", PageForm, "compliance"),
    ("/", PageForm, "submitter"),
], ids=["audit", "export", "manifest", "queue", "submissions", "home"])
def test_list_and_export_queries_survive_hostile_input(path, form, who, people, routed):
    saved = routed(people["submitter"])

    @FUZZ
    @given(query=form_bodies(form, extra=["format"]), htmx=st.booleans())
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
    @given(body=form_bodies(AuthenticationForm, extra=["next"]), htmx=st.booleans())
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


# --- Every field, every edge value, one at a time ---------------------------------------------
# Hypothesis explores combinations but reaches a rare value late; this table sends each edge
# value of a field's kind to each field of each form, alone, so those are always tried. (The
# date ends of the calendar below were a 500 on /audit/ and the exports.)

EDGE_STRINGS = ["\x00", "x" * 100_000, "-1", "9" * 40, "NaN", "1e99999", "\U0001f4a9", " ", "[]", "<b>"]
EDGE_DATES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01", "9999-12-31T23:59:59.999999",
              "2024-02-30", "10000-01-01", "2024-01-01T10:00:00+99:00"]
EDGE_NUMBERS = ["-9223372036854775809", "9223372036854775808", "1e400", "-0", "0.00000000000000000001", "Infinity"]


def _edges(field):
    if isinstance(field, (forms.DateTimeField, forms.DateField)):
        return EDGE_DATES + EDGE_STRINGS
    if isinstance(field, (forms.IntegerField, forms.DecimalField)):
        return EDGE_NUMBERS + EDGE_STRINGS
    return EDGE_STRINGS


EDGE_TARGETS = [
    ("GET", "/audit/", "compliance", AuditPageForm),
    ("GET", "/audit/export/", "compliance", ExportPageForm),
    ("GET", "/audit/export/manifest/", "compliance", ExportPageForm),
    ("POST", "/accounts/login/", None, AuthenticationForm),
] + [("POST", f"/workflows/{slug}/new/{step}/", "submitter", (slug, step)) for slug, step in WIZARD_STEPS]


@pytest.mark.parametrize("method, path, who, form", EDGE_TARGETS, ids=[t[1] for t in EDGE_TARGETS])
def test_every_field_gets_every_edge_value(method, path, who, form, demo, people, routed):
    saved = routed(people["submitter"])
    if isinstance(form, tuple):
        slug, step = form
        form = step_form_class(demo.version(slug).spec.form.steps[step - 1])
    base = {"format": "csv"} if "export" in path else {}
    client = Client()
    if who:
        client.force_login(people[who])
    kept = _kept([saved.pk])
    for name, field in form.base_fields.items():
        for edge in _edges(field):
            body = {**base, name: edge}
            response = _get(client, path, body) if method == "GET" else client.post(path, body)
            _assert_no_server_error(response, f"{method} {path} {name}={edge!r:.60}")
            assert response.status_code in (200, 302, 400, 422), (name, edge, response.status_code)
    assert _kept([saved.pk]) == kept
