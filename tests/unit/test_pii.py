"""Reversible redaction of pii fields (workflows/pipeline/pii.py)."""
import json

from workflows.pipeline import pii


def test_only_pii_fields_with_values_are_replaced(demo_spec, customer_reply_input):
    spec = demo_spec()
    customer_reply_input["customer_email"] = ""
    redaction = pii.redact(spec, customer_reply_input)
    assert redaction.values["customer_name"] == "<CUSTOMER_NAME>"
    assert redaction.values["customer_email"] == ""
    assert redaction.values["complaint"] == customer_reply_input["complaint"]
    assert redaction.placeholders == {"<CUSTOMER_NAME>": "Ann Example"}
    assert redaction.fields == ["customer_name"]


def test_restore_json_keeps_the_document_valid_for_awkward_values(demo_spec, customer_reply_input):
    customer_reply_input["customer_name"] = 'Zoë "Q" \\ Back'
    redaction = pii.redact(demo_spec(), customer_reply_input)
    answer = json.dumps({"reply": "Dear <CUSTOMER_NAME>, sorry.", "tone": "apologetic"})
    restored = json.loads(pii.restore(answer, redaction, is_json=True))
    assert restored["reply"] == 'Dear Zoë "Q" \\ Back, sorry.'


def test_restore_text_and_broken_json(demo_spec, customer_reply_input):
    redaction = pii.redact(demo_spec(), customer_reply_input)
    assert pii.restore("Hi <CUSTOMER_NAME>", redaction, is_json=False) == "Hi Ann Example"
    assert pii.restore("{not json <CUSTOMER_NAME>", redaction, is_json=True) == "{not json Ann Example"


def test_nothing_to_restore_returns_the_answer_untouched(demo_spec):
    spec = demo_spec("underwriting-memo")
    redaction = pii.redact(spec, {"business_name": "Acme"})
    assert redaction.placeholders == {}
    assert pii.restore('{"a":  1}', redaction, is_json=True) == '{"a":  1}'


def test_pii_values_repeated_in_free_text_are_masked_too(demo_spec, customer_reply_input):
    customer_reply_input["complaint"] = "Ann Example here; write to ann@example.com. Ann called twice."
    redaction = pii.redact(demo_spec(), customer_reply_input)
    assert redaction.values["complaint"] == "<CUSTOMER_NAME> here; write to <CUSTOMER_EMAIL>. Ann called twice."
    assert redaction.mask("Greet Ann Example warmly") == "Greet <CUSTOMER_NAME> warmly"


def test_very_short_values_are_not_masked_inside_words(demo_spec, customer_reply_input):
    customer_reply_input.update(customer_name="Al", complaint="Almost all of it broke.")
    redaction = pii.redact(demo_spec(), customer_reply_input)
    assert redaction.values["customer_name"] == "<CUSTOMER_NAME>"
    assert redaction.values["complaint"] == "Almost all of it broke."


def test_masking_is_whole_word_and_case_insensitive(demo_spec, customer_reply_input):
    customer_reply_input.update(customer_name="Ann", complaint="Annual fee charged; ann and ANN both complained.")
    redaction = pii.redact(demo_spec(), customer_reply_input)
    assert redaction.values["complaint"] == "Annual fee charged; <CUSTOMER_NAME> and <CUSTOMER_NAME> both complained."


def test_a_placeholder_the_model_mangled_is_reported(demo_spec, customer_reply_input):
    redaction = pii.redact(demo_spec(), customer_reply_input)
    restored = pii.restore('{"reply": "Dear <Customer_Name>", "tone": "neutral"}', redaction, is_json=True)
    assert redaction.unresolved(restored) == ["CUSTOMER_NAME"]
    clean = pii.restore('{"reply": "Dear <CUSTOMER_NAME>", "<CUSTOMER_NAME>": 1}', redaction, is_json=True)
    assert redaction.unresolved(clean) == []
    assert json.loads(clean) == {"reply": "Dear Ann Example", "Ann Example": 1}


def test_a_field_name_used_as_an_ordinary_output_key_is_not_a_left_placeholder(demo_spec, customer_reply_input):
    redaction = pii.redact(demo_spec(), customer_reply_input)
    assert redaction.unresolved('{"customer_name": "Ann Example"}') == []
    assert redaction.unresolved("Dear [customer_name],") == ["CUSTOMER_NAME"]
