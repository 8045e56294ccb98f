"""The guided form: one page per step, validated on the server, nothing typed is ever lost."""
from __future__ import annotations

import functools

import pytest

from tests.commit_hooks import app_hooks
from workflows.dispatch import enqueue_generation
from workflows.models import AuditEvent, Submission

from .html import Page

# One wizard (one browser tab): its id rides in the URL, and its answers are kept under it.
WIZ = "0123456789abcdef0123456789abcdef"
NEW = f"/workflows/customer-reply/new/?w={WIZ}"
STEP1 = f"/workflows/customer-reply/new/1/?w={WIZ}"
STEP2 = f"/workflows/customer-reply/new/2/?w={WIZ}"
GOOD_STEP1 = {"customer_name": "Ann Example", "customer_email": "ann@example.com", "channel": "email"}
GOOD_STEP2 = {"complaint": "My parcel arrived broken.", "order_value": "42.50", "refund_offered": "on"}


@pytest.fixture
def submitter(client_for):
    return client_for("submitter")


def _shown(typed: str):
    """How a posted value reads back from the rendered control (a ticked checkbox is True)."""
    return True if typed == "on" else typed


def assert_error_beside(page: Page, field: str, message: str):
    """The message is rendered in the same field block as the control it is about."""
    error = page.by_id(f"id_{field}_error")
    assert error is not None, f"no error element for {field}"
    assert message in error.text
    control = page.by_id(f"id_{field}")
    assert control is not None
    block = error.nearest("field")
    assert block is not None and block is control.nearest("field"), f"the error for {field} is not beside it"
    assert "has-error" in dict(block.attributes)["class"].split()


def test_step_one_renders_its_fields_with_labels(submitter):
    response = submitter.get(NEW)
    assert response.status_code == 200
    page = Page(response)
    for field, label in [("customer_name", "Customer name"), ("customer_email", "Customer email"), ("channel", "Channel")]:
        assert page.by_id(f"id_{field}") is not None
        (label_node,) = page.all("label", for_=f"id_{field}")
        assert label_node.text == label
    # Only the first step's fields are on the first page.
    assert page.by_id("id_complaint") is None
    assert page.all("form", action=STEP1), "the form posts to its own step"
    assert [n.text for n in page.all("li", class_="current")] == ["1. Customer"]


@pytest.mark.parametrize(
    "url, post, field, message",
    [
        (STEP1, {**GOOD_STEP1, "customer_name": ""}, "customer_name", "This field is required."),
        (STEP1, {**GOOD_STEP1, "channel": "fax"}, "channel", "Select a valid choice. fax is not one of the available choices."),
        (STEP1, {**GOOD_STEP1, "customer_email": "ann-at-example"}, "customer_email", "Enter a valid email address."),
        (STEP1, {**GOOD_STEP1, "customer_name": "x" * 201}, "customer_name", "This answer is 201 characters long; the most it can take is 200. Nothing was cut"),
        (STEP2, {**GOOD_STEP2, "order_value": "-1"}, "order_value", "Ensure this value is greater than or equal to 0."),
        (STEP2, {**GOOD_STEP2, "complaint": ""}, "complaint", "This field is required."),
    ],
    ids=["missing-required", "bad-choice", "bad-email", "too-long", "negative-decimal", "missing-textarea"],
)
def test_invalid_step_is_422_with_the_error_beside_the_field_and_values_kept(submitter, url, post, field, message):
    response = submitter.post(url, post)
    assert response.status_code == 422
    page = Page(response)
    assert_error_beside(page, field, message)
    # Every value typed comes back, the wrong one included, so it can be corrected in place
    # (except a choice that is not among the options: a <select> cannot show it).
    shown = {name: _shown(typed) for name, typed in post.items()}
    if field == "channel":
        shown["channel"] = ""
    assert {name: page.value(name) for name in post} == shown
    assert Submission.objects.count() == 0
    # The draft lives in the session: coming back to the step later shows the same values.
    again = Page(submitter.get(url))
    assert {name: again.value(name) for name in post} == shown
    assert again.by_id(f"id_{field}_error") is None, "a plain GET does not shout at the user"


def test_valid_step_one_goes_to_step_two(submitter):
    response = submitter.post(NEW, GOOD_STEP1)
    assert response.status_code == 302
    assert response["Location"] == STEP2


def test_back_goes_to_the_previous_step_keeping_both_steps_values(submitter):
    submitter.post(STEP1, GOOD_STEP1)
    # Back does not validate: a half-filled step is kept as typed.
    response = submitter.post(STEP2, {"complaint": "half a thought", "order_value": "", "nav": "back"})
    assert response.status_code == 302
    assert response["Location"] == STEP1
    step1 = Page(submitter.get(STEP1))
    assert [step1.value(k) for k in GOOD_STEP1] == list(GOOD_STEP1.values())
    step2 = Page(submitter.get(STEP2))
    assert step2.value("complaint") == "half a thought"
    assert step2.all("button", name="nav", value="back"), "step 2 offers a Back button"
    assert Submission.objects.count() == 0


def test_final_step_creates_one_submission_audits_and_enqueues_on_commit(
    submitter, people, django_capture_on_commit_callbacks
):
    submitter.post(STEP1, GOOD_STEP1)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = submitter.post(STEP2, GOOD_STEP2)
    submission = Submission.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/submissions/{submission.pk}/"
    assert submission.submitted_by == people["submitter"]
    assert submission.data == {
        "customer_name": "Ann Example",
        "customer_email": "ann@example.com",
        "channel": "email",
        "complaint": "My parcel arrived broken.",
        "order_value": "42.50",
        "refund_offered": True,
    }
    assert submission.workflow_version.workflow.slug == "customer-reply"
    (event,) = AuditEvent.objects.filter(action="submission.created")
    assert (event.object_type, event.object_id, event.actor) == ("submission", str(submission.pk), people["submitter"])
    # Generation is enqueued once, and only when the transaction commits.
    assert len(app_hooks(callbacks)) == 1
    (enqueue,) = app_hooks(callbacks)
    assert isinstance(enqueue, functools.partial)
    assert enqueue.func is enqueue_generation
    assert enqueue.args == (submission.pk,)
    # The wizard starts afresh for the next request.
    assert Page(submitter.get(STEP1)).value("customer_name") in (None, "")


def test_final_step_revalidates_earlier_steps(submitter):
    # Step 1 was never completed: the session holds nothing, so the final POST cannot pass.
    response = submitter.post(STEP2, GOOD_STEP2)
    assert response.status_code == 302
    assert response["Location"] == STEP1
    assert Submission.objects.count() == 0
    page = submitter.get(STEP1)
    assert "Step 1 (Customer) needs attention." in page.content.decode()


@pytest.mark.parametrize("url", ["/workflows/customer-reply/new/0/", "/workflows/customer-reply/new/3/", "/workflows/no-such-workflow/new/", "/workflows/no-such-workflow/new/1/"])
def test_step_out_of_range_or_unknown_workflow_is_404(submitter, url):
    assert submitter.get(url).status_code == 404
    assert submitter.post(url, GOOD_STEP1).status_code == 404


def test_htmx_post_with_errors_returns_only_the_wizard(submitter):
    response = submitter.post(STEP1, {**GOOD_STEP1, "customer_email": "nope"}, headers={"HX-Request": "true"})
    assert response.status_code == 422
    body = response.content.decode()
    assert "<html" not in body and "<header" not in body
    assert body.lstrip().startswith('<section class="card wizard" id="wizard">')
    page = Page(response)
    assert_error_beside(page, "customer_email", "Enter a valid email address.")
    assert page.value("customer_name") == "Ann Example"


def test_htmx_valid_steps_answer_with_hx_redirect(submitter):
    hx = {"HX-Request": "true"}
    step1 = submitter.post(STEP1, GOOD_STEP1, headers=hx)
    assert step1.status_code == 200 and step1["HX-Redirect"] == STEP2
    final = submitter.post(STEP2, GOOD_STEP2, headers=hx)
    submission = Submission.objects.get()
    assert final.status_code == 200
    assert final["HX-Redirect"] == f"/submissions/{submission.pk}/"


def test_a_double_submitted_final_step_creates_one_submission(submitter):
    submitter.post(STEP1, GOOD_STEP1)
    # Both requests of a double click read the same session; replay the second with it.
    session_before = dict(submitter.session.items())
    first = submitter.post(STEP2, GOOD_STEP2)
    session = submitter.session
    session.update(session_before)
    session.save()
    second = submitter.post(STEP2, GOOD_STEP2)
    (submission,) = Submission.objects.all()
    assert first["Location"] == second["Location"] == f"/submissions/{submission.pk}/"
    assert AuditEvent.objects.filter(action="submission.created").count() == 1


def test_a_new_wizard_after_a_submission_creates_a_new_one_even_with_the_same_data(submitter):
    for _ in range(2):
        submitter.post(STEP1, GOOD_STEP1)
        submitter.post(STEP2, GOOD_STEP2)
    assert Submission.objects.count() == 2


# --- issue 8: each tab's answers apart, a new request prefilled, no silent cut ---------------

OTHER = "fedcba9876543210fedcba9876543210"


def _wizard_forms(page):
    return [node for node in page.all("form") if "data-wizard" in node.attrs]


def test_two_wizards_on_one_workflow_keep_their_answers_apart(submitter):
    tab_a, tab_b = WIZ, OTHER
    ann = {**GOOD_STEP1, "customer_name": "Ann Example"}
    bob = {**GOOD_STEP1, "customer_name": "Bob Other", "customer_email": "bob@example.com"}
    assert submitter.post(f"/workflows/customer-reply/new/1/?w={tab_a}", ann)["Location"].endswith(f"?w={tab_a}")
    assert submitter.post(f"/workflows/customer-reply/new/1/?w={tab_b}", bob)["Location"].endswith(f"?w={tab_b}")
    # Each tab reads back its own answers, in the same session.
    assert Page(submitter.get(f"/workflows/customer-reply/new/1/?w={tab_a}")).value("customer_name") == "Ann Example"
    assert Page(submitter.get(f"/workflows/customer-reply/new/1/?w={tab_b}")).value("customer_name") == "Bob Other"
    # Tab B finishes first; tab A's request is still Ann's, and still open.
    submitter.post(f"/workflows/customer-reply/new/2/?w={tab_b}", GOOD_STEP2)
    assert Page(submitter.get(f"/workflows/customer-reply/new/1/?w={tab_a}")).value("customer_name") == "Ann Example"
    submitter.post(f"/workflows/customer-reply/new/2/?w={tab_a}", {**GOOD_STEP2, "complaint": "Ann's own words."})
    by_name = {s.data["customer_name"]: s.data for s in Submission.objects.all()}
    assert by_name["Ann Example"]["customer_email"] == "ann@example.com"
    assert by_name["Ann Example"]["complaint"] == "Ann's own words."
    assert by_name["Bob Other"]["customer_email"] == "bob@example.com"
    assert by_name["Bob Other"]["complaint"] == GOOD_STEP2["complaint"]


def test_opening_the_form_starts_a_new_wizard_each_time(submitter):
    first, second = (Page(submitter.get("/workflows/customer-reply/new/")) for _ in range(2))
    (form1,), (form2,) = _wizard_forms(first), _wizard_forms(second)
    id1, id2 = form1.attrs["data-wizard"], form2.attrs["data-wizard"]
    assert id1 != id2 and len(id1) == len(id2) == 32
    assert form1.attrs["action"] == f"/workflows/customer-reply/new/1/?w={id1}"
    assert form1.attrs["hx-post"] == form1.attrs["action"]


def test_a_malformed_wizard_id_is_not_used(submitter):
    submitter.post(STEP1, GOOD_STEP1)
    response = submitter.get("/workflows/customer-reply/new/1/?w=../../etc")
    assert response.status_code == 200
    (form,) = _wizard_forms(Page(response))
    assert form.attrs["data-wizard"] != WIZ and Page(response).value("customer_name") in (None, "")


def test_an_over_long_answer_is_refused_not_cut_and_the_input_has_no_maxlength(submitter):
    page = Page(submitter.get(STEP2))
    complaint = page.by_id("id_complaint")
    assert "maxlength" not in complaint.attrs, "a browser would cut a paste at maxlength without a word"
    limit = int(complaint.attrs["data-maxlength"])
    text = "x" * (limit + 5)
    submitter.post(STEP1, GOOD_STEP1)
    response = submitter.post(STEP2, {**GOOD_STEP2, "complaint": text})
    assert response.status_code == 422
    refused = Page(response)
    assert limit >= 1000, "the demo's complaint field takes thousands of characters: the separators are seen"
    # Both numbers with thousands separators (8,005 and 8,000), as the counter of submit.js writes them.
    assert_error_beside(refused, "complaint", f"This answer is {limit + 5:,} characters long; the most it can take is "
                                              f"{limit:,}. Nothing was cut: please shorten it and send it again.")
    assert str(limit + 5) not in refused.by_id("id_complaint_error").text
    assert refused.value("complaint") == text, "the whole text comes back, to be shortened in place"
    assert Submission.objects.count() == 0


def test_a_new_request_prefilled_from_an_earlier_one(submitter, people, routed, client_for):
    earlier = routed(people["submitter"], lane="blocking_review")
    response = submitter.get(f"/workflows/customer-reply/new/?from={earlier.pk}")
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith("/workflows/customer-reply/new/1/?w=")
    step1 = Page(submitter.get(location))
    assert step1.by_id("prefilled-notice") is not None
    for name in ("customer_name", "customer_email", "channel"):
        assert step1.value(name) == earlier.data[name], name
    step2_url = location.replace("/new/1/", "/new/2/")
    step2 = Page(submitter.get(step2_url))
    assert step2.value("complaint") == earlier.data["complaint"]
    assert step2.value("refund_offered") is True, "a ticked box comes back ticked"
    # Sending it as it is makes a new request with the same answers; the earlier one is untouched.
    submitter.post(location, {n: earlier.data[n] for n in ("customer_name", "customer_email", "channel")})
    submitter.post(step2_url, {"complaint": step2.value("complaint"), "order_value": step2.value("order_value"),
                               "refund_offered": "on"})
    newer = Submission.objects.exclude(pk=earlier.pk).get()
    assert newer.data == earlier.data


def test_only_ones_own_request_can_prefill_a_new_one(people, routed, client_for):
    theirs = routed(people["other_submitter"], lane="blocking_review")
    assert client_for("submitter").get(f"/workflows/customer-reply/new/?from={theirs.pk}").status_code == 404
    assert client_for("submitter").get("/workflows/customer-reply/new/?from=abc").status_code == 404
    # Another workflow's request does not fill this one's form.
    mine = routed(people["submitter"], lane="blocking_review", slug="underwriting-memo")
    assert client_for("submitter").get(f"/workflows/customer-reply/new/?from={mine.pk}").status_code == 404
