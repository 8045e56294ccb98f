"""Fields marked `pii: true` never reach the model; the answer gets the real values back."""
import json

from tests.integration.conftest import submit, unique_marker, wait_routed
from workflows import services
from workflows.models import AuditEvent


def test_pii_fields_are_redacted_before_the_model_and_restored_after(worker, fake_model, demo, customer_reply_input):
    marker = unique_marker()
    customer_reply_input.update(customer_name='Ann "Quote" Example', complaint=f"Broken parcel. {marker}")
    submission = wait_routed(submit(demo, customer_reply_input).pk)

    (request,) = fake_model.calls_for(marker)
    sent = json.dumps(request)
    assert "Ann" not in sent and "ann@example.com" not in sent
    assert "Customer <CUSTOMER_NAME> wrote" in request["messages"][-1]["content"]

    draft = submission.latest_draft
    # Restored inside the parsed JSON, so the quote in the name cannot break the document.
    assert json.loads(draft.content)["reply"].startswith('Dear Ann "Quote" Example,')
    assert draft.parsed["reply"].startswith('Dear Ann "Quote" Example,')
    event = AuditEvent.objects.get(action="draft.generated", object_id=str(draft.pk))
    assert event.payload["pii_redacted_fields"] == ["customer_email", "customer_name"]


def test_without_pii_fields_nothing_is_redacted(worker, fake_model, demo):
    marker = unique_marker()
    data = {"business_name": "Acme Bakery", "sector": "retail", "years_trading": 4, "loan_amount": "1000",
            "annual_revenue": "50000", "existing_debt": "", "notes": marker, "collateral_offered": False}
    submission = wait_routed(submit(demo, data, slug="underwriting-memo").pk)
    requests = fake_model.calls_for(marker)  # the draft and its one repair (the fake answers another schema)
    assert requests and all("Acme Bakery" in r["messages"][-1]["content"] for r in requests)
    event = AuditEvent.objects.get(action="draft.generated", object_id=str(submission.latest_draft.pk))
    assert event.payload["pii_redacted_fields"] == []


def test_pii_in_free_text_and_in_reviewer_feedback_never_reaches_the_model(worker, fake_model, demo, customer_reply_input):
    marker = unique_marker()
    customer_reply_input["complaint"] = f"This is Ann Example, my parcel broke. {marker} [[lane:blocking]]"
    submission = wait_routed(submit(demo, customer_reply_input).pk)
    task = submission.review_tasks.get()
    reviewer = demo.users["reviewer"]
    services.review_claim(task_id=task.pk, user=reviewer)
    services.review_regenerate(task_id=task.pk, user=reviewer, feedback="Greet Ann Example by name.")
    wait_routed(submission.pk, attempt=2)

    first, second = fake_model.calls_for(marker)
    for request in (first, second):
        assert "Ann Example" not in json.dumps(request)
    assert "Greet <CUSTOMER_NAME> by name." in second["messages"][-1]["content"]


def test_an_answer_with_a_mangled_placeholder_is_held_for_review(worker, fake_model, demo, customer_reply_input):
    customer_reply_input["complaint"] = f"Broken parcel. {unique_marker()} [[lane:auto]] [[mangle]]"
    submission = wait_routed(submit(demo, customer_reply_input).pk)
    draft = submission.latest_draft
    assert "<Customer_Name>" in draft.content
    assert "unresolved_placeholder" in draft.findings
    assert submission.lane == "blocking_review" and not submission.is_released
