"""Detector-based redaction of free text, restore, and PII in the output (workflows/pipeline/pii.py)."""
from __future__ import annotations

import json
import socket

import pytest

from workflows.definitions import parse_definition
from workflows.pipeline import pii
from workflows.pipeline.prompts import render_prompt

EMAIL = "jane.roe@example.org"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"
IBAN = "GB82 WEST 1234 5698 7654 32"
SSN = "536-22-1845"
NINO = "AB 12 34 56 C"
IP = "203.0.113.7"

COMPLAINT = (
    f"Hello, my name is Jane Roe. Write to {EMAIL} or call me on {PHONE}. "
    f"You charged card {CARD} twice; refund to IBAN {IBAN}. My SSN is {SSN}, "
    f"NI number {NINO}. Your site logged me in from {IP}."
)
SECRETS = {
    "EMAIL_ADDRESS": EMAIL, "PHONE_NUMBER": PHONE, "CREDIT_CARD": CARD, "IBAN_CODE": IBAN,
    "US_SSN": SSN, "UK_NINO": NINO, "IP_ADDRESS": IP, "PERSON": "Jane Roe",
}


@pytest.fixture
def spec_with(demo_data):
    def make(slug="customer-reply", **changes):
        data = demo_data(slug)
        data.update(changes)
        return parse_definition(data)

    return make


@pytest.fixture
def complaint_input(customer_reply_input):
    return {**customer_reply_input, "complaint": COMPLAINT}


def test_every_kind_in_free_text_is_replaced_before_the_prompt(demo_spec, complaint_input):
    spec = demo_spec()
    redaction = pii.redact(spec, complaint_input)
    prompt = render_prompt(spec, redaction.values)
    for kind, value in SECRETS.items():
        assert value not in prompt.user, kind
        assert f"<{kind}_1>" in prompt.user, kind
        assert redaction.placeholders[f"<{kind}_1>"] == value
    assert "Ann Example" not in prompt.user and "<CUSTOMER_NAME>" in prompt.user


def test_the_redacted_complaint_restores_to_the_original(demo_spec, complaint_input):
    redaction = pii.redact(demo_spec(), complaint_input)
    assert pii.restore(redaction.values["complaint"], redaction, is_json=False) == COMPLAINT


def test_the_same_value_twice_gets_one_placeholder(demo_spec, customer_reply_input):
    customer_reply_input["complaint"] = f"Mail {EMAIL}. Again: {EMAIL}. Other: bob@example.net."
    redaction = pii.redact(demo_spec(), customer_reply_input)
    assert redaction.values["complaint"] == (
        "Mail <EMAIL_ADDRESS_1>. Again: <EMAIL_ADDRESS_1>. Other: <EMAIL_ADDRESS_2>.")
    emails = [t for t in redaction.placeholders if t.startswith("<EMAIL_ADDRESS")]
    assert emails == ["<EMAIL_ADDRESS_1>", "<EMAIL_ADDRESS_2>"]


def test_a_value_that_is_also_a_pii_field_keeps_the_field_placeholder(demo_spec, customer_reply_input):
    customer_reply_input["complaint"] = "Please reply to ann@example.com, not to bob@example.net."
    redaction = pii.redact(demo_spec(), customer_reply_input)
    assert redaction.values["complaint"] == "Please reply to <CUSTOMER_EMAIL>, not to <EMAIL_ADDRESS_1>."


def test_redaction_is_deterministic_whatever_order_the_values_arrive_in(demo_spec, complaint_input):
    first = pii.redact(demo_spec(), complaint_input)
    second = pii.redact(demo_spec(), dict(reversed(list(complaint_input.items()))))
    assert first.values == second.values
    assert first.placeholders == second.placeholders
    assert render_prompt(demo_spec(), first.values) == render_prompt(demo_spec(), second.values)


def test_placeholders_are_numbered_in_form_order_across_fields(spec_with):
    spec = spec_with("underwriting-memo")
    values = {"notes": "Owner: a@example.com", "business_name": "Acme, contact b@example.com"}
    redaction = pii.redact(spec, values)
    assert redaction.values["business_name"] == "Acme, contact <EMAIL_ADDRESS_1>"
    assert redaction.values["notes"] == "Owner: <EMAIL_ADDRESS_2>"


def test_a_placeholder_already_written_in_the_input_is_not_reused(demo_spec, customer_reply_input):
    customer_reply_input["complaint"] = f"Your form showed <EMAIL_ADDRESS_1> instead of {EMAIL}."
    redaction = pii.redact(demo_spec(), customer_reply_input)
    assert redaction.values["complaint"] == "Your form showed <EMAIL_ADDRESS_1> instead of <EMAIL_ADDRESS_2>."
    restored = pii.restore(redaction.values["complaint"], redaction, is_json=False)
    assert restored == customer_reply_input["complaint"]


def test_detected_values_are_restored_inside_json_output(demo_spec, complaint_input):
    redaction = pii.redact(demo_spec(), complaint_input)
    answer = json.dumps({"reply": "Dear <CUSTOMER_NAME>, we will call <PHONE_NUMBER_1> and refund <IBAN_CODE_1>.",
                         "<EMAIL_ADDRESS_1>": ["<CREDIT_CARD_1>"], "tone": "apologetic"})
    restored = json.loads(pii.restore(answer, redaction, is_json=True))
    assert restored == {"reply": f"Dear Ann Example, we will call {PHONE} and refund {IBAN}.",
                        EMAIL: [CARD], "tone": "apologetic"}
    assert redaction.unresolved(json.dumps(restored)) == []


def test_a_mangled_detector_placeholder_is_reported(demo_spec, complaint_input):
    redaction = pii.redact(demo_spec(), complaint_input)
    restored = pii.restore('{"reply": "Call <Phone_Number_1>", "tone": "neutral"}', redaction, is_json=True)
    assert redaction.unresolved(restored) == ["PHONE_NUMBER_1"]


def test_reviewer_feedback_is_scanned_and_its_new_values_are_restored(demo_spec, complaint_input):
    redaction = pii.redact(demo_spec(), complaint_input)
    feedback = f"Also copy bob@example.net and keep {EMAIL} in the loop."
    masked = redaction.mask(feedback)
    assert masked == "Also copy <EMAIL_ADDRESS_2> and keep <EMAIL_ADDRESS_1> in the loop."
    assert pii.restore(masked, redaction, is_json=False) == feedback
    assert pii.pii_in_output(json.dumps({"reply": "cc bob@example.net"}), redaction) == []


def test_a_value_found_once_is_masked_where_it_recurs_undetected(demo_spec, customer_reply_input):
    customer_reply_input["complaint"] = "Please phone 2125550134 tonight."
    redaction = pii.redact(demo_spec(), customer_reply_input)
    assert redaction.values["complaint"] == "Please phone <PHONE_NUMBER_1> tonight."
    # Without a context word a bare digit run is not a phone number, but this one is known.
    assert redaction.mask("the number was 2125550134") == "the number was <PHONE_NUMBER_1>"


def test_audit_attributes_name_kinds_never_values(demo_spec, complaint_input):
    redaction = pii.redact(demo_spec(), complaint_input)
    assert redaction.mode == "redact"
    assert redaction.field_names == ["customer_email", "customer_name"]
    assert redaction.kinds == sorted(SECRETS)
    assert redaction.fields == ["customer_email", "customer_name", *sorted(SECRETS)]
    audit_text = json.dumps([redaction.fields, redaction.mode])
    assert not any(value in audit_text for value in SECRETS.values())
    assert not any(value in repr(redaction) for value in SECRETS.values())


def test_nothing_found_nothing_added(demo_spec, customer_reply_input):
    redaction = pii.redact(demo_spec(), customer_reply_input)
    assert redaction.placeholders == {"<CUSTOMER_NAME>": "Ann Example", "<CUSTOMER_EMAIL>": "ann@example.com"}
    assert redaction.kinds == []


# --- pii: allow ------------------------------------------------------------------------------


def test_allow_switches_detection_off_but_pii_fields_are_still_replaced(spec_with, complaint_input):
    spec = spec_with(pii="allow")
    redaction = pii.redact(spec, complaint_input)
    assert redaction.mode == "allow"
    assert redaction.values["complaint"] == COMPLAINT
    assert redaction.values["customer_name"] == "<CUSTOMER_NAME>"
    assert redaction.fields == ["customer_email", "customer_name"]
    assert redaction.mask(f"Greet Ann Example, call {PHONE}") == f"Greet <CUSTOMER_NAME>, call {PHONE}"
    assert pii.pii_in_output(json.dumps({"reply": "write to x@example.net"}), redaction) == []


def test_allow_without_pii_fields_changes_nothing(spec_with):
    redaction = pii.redact(spec_with("underwriting-memo", pii="allow"), {"notes": f"call {PHONE}"})
    assert redaction.values == {"notes": f"call {PHONE}"}
    assert redaction.placeholders == {}


# --- PII in the output -----------------------------------------------------------------------


def test_pii_the_model_invented_is_a_finding_named_by_kind_only(demo_spec, complaint_input):
    redaction = pii.redact(demo_spec(), complaint_input)
    answer = json.dumps({"reply": "Write to help@acme-support.com or pay with 5500 0000 0000 0004.", "tone": "neutral"})
    findings = pii.pii_in_output(answer, redaction)
    assert findings == ["CREDIT_CARD", "EMAIL_ADDRESS"]
    assert "help@" not in ", ".join(findings)


def test_restored_input_pii_in_the_output_is_not_a_finding(demo_spec, complaint_input):
    redaction = pii.redact(demo_spec(), complaint_input)
    answer = pii.restore(json.dumps({
        "reply": "Dear <CUSTOMER_NAME>, we wrote to <CUSTOMER_EMAIL> and <EMAIL_ADDRESS_1>, refunded "
                 "<CREDIT_CARD_1> and will call <PHONE_NUMBER_1>.", "tone": "apologetic"}), redaction, is_json=True)
    assert pii.pii_in_output(answer, redaction) == []


def test_input_pii_written_differently_is_not_a_finding(demo_spec, complaint_input):
    redaction = pii.redact(demo_spec(), complaint_input)
    answer = json.dumps({"reply": "We will call 020 7946 0958; card 4111-1111-1111-1111; JANE.ROE@EXAMPLE.ORG."})
    assert pii.pii_in_output(answer, redaction) == []


def test_names_in_the_output_are_not_findings(demo_spec, customer_reply_input):
    redaction = pii.redact(demo_spec(), customer_reply_input)
    answer = json.dumps({"reply": "Dear Ann,\nsorry.\n\nKind regards,\nSarah Jones", "tone": "apologetic"})
    assert pii.pii_in_output(answer, redaction) == []


def test_pii_in_text_output_and_in_broken_json(demo_spec, customer_reply_input):
    redaction = pii.redact(demo_spec(), customer_reply_input)
    assert pii.pii_in_output("Call +1 415 555 0132 for help.", redaction) == ["PHONE_NUMBER"]
    assert pii.pii_in_output('{"reply": "mail x@example.net', redaction) == ["EMAIL_ADDRESS"]
    assert pii.pii_in_output("Nothing personal here.", redaction) == []


# --- offline ---------------------------------------------------------------------------------


def test_the_whole_round_trip_never_touches_the_network(monkeypatch, demo_spec, complaint_input):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access refused by the test")

    for target, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"),
                         (socket, "create_connection"), (socket, "getaddrinfo")):
        monkeypatch.setattr(target, name, refuse)
    redaction = pii.redact(demo_spec(), complaint_input)
    redaction.mask("cc someone@new-domain.io")
    restored = pii.restore(json.dumps({"reply": "<EMAIL_ADDRESS_2>"}), redaction, is_json=True)
    assert pii.pii_in_output(restored, redaction) == []
    assert attempts == []
