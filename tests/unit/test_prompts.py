"""Prompt rendering from validated form values (DESIGN.md section 3)."""
from __future__ import annotations

import datetime
from decimal import Decimal

import pytest

from workflows.definitions import parse_definition
from workflows.pipeline.prompts import render_prompt, render_template

JSON_INSTRUCTION = "Answer with a single JSON object that matches the given schema."


def test_values_are_substituted_without_html_escaping(demo_spec, customer_reply_input):
    customer_reply_input["complaint"] = 'The <b>box</b> & "lid" were \'crushed\' > 2cm'
    prompt = render_prompt(demo_spec(), customer_reply_input)
    assert 'The <b>box</b> & "lid" were \'crushed\' > 2cm' in prompt.user
    assert "&amp;" not in prompt.user and "&lt;" not in prompt.user and "&#x27;" not in prompt.user


def test_every_placeholder_is_replaced(demo_spec, customer_reply_input):
    prompt = render_prompt(demo_spec(), customer_reply_input)
    assert "{{" not in prompt.user and "}}" not in prompt.user
    assert prompt.user.startswith("Customer Ann Example wrote via email:\nMy parcel arrived broken.\n")
    assert "Order value: 42.50." in prompt.user


@pytest.mark.parametrize("value, text", [(True, "yes"), (False, "no")])
def test_booleans_render_as_yes_no(demo_spec, customer_reply_input, value, text):
    customer_reply_input["refund_offered"] = value
    assert f"Refund may be offered: {text}." in render_prompt(demo_spec(), customer_reply_input).user


def test_lists_are_joined(demo_spec):
    values = {"incident_date": "2025-03-01", "business_unit": "retail", "severity": "high",
              "summary": "Data leak", "customers_affected": 12, "regulations": ["GDPR", "Consumer Duty"]}
    prompt = render_prompt(demo_spec("compliance-report"), values)
    assert "Regulations: GDPR, Consumer Duty." in prompt.user
    assert "Customers affected: 12." in prompt.user


def test_missing_optional_values_render_as_not_given(demo_spec, customer_reply_input):
    # Not as dangling punctuation ("Order value: .") that reads like a typo to the model.
    customer_reply_input["order_value"] = None
    customer_reply_input["channel"] = "  "
    del customer_reply_input["refund_offered"]
    prompt = render_prompt(demo_spec(), customer_reply_input)
    assert "Order value: not given. Refund may be offered: not given." in prompt.user
    assert "via not given:" in prompt.user
    assert "None" not in prompt.user


def test_typed_values_render_plainly():
    template = "{{ d }} / {{ n }} / {{ i }} / {{ empty }}"
    text = render_template(template, {"d": datetime.date(2025, 1, 31), "n": Decimal("10.50"), "i": 0, "empty": []})
    assert text == "2025-01-31 / 10.50 / 0 / not given"


def test_placeholder_syntax_in_a_value_is_not_expanded():
    # A submitter typing "{{ secret }}" must not pull another value into the prompt.
    text = render_template("A: {{ a }}", {"a": "{{ b }}", "b": "leaked"})
    assert text == "A: {{ b }}"


def test_django_template_syntax_is_inert():
    text = render_template("{% if x %}yes{% endif %} {{ x|upper }} {{ x }}", {"x": "v"})
    assert text == "{% if x %}yes{% endif %} {{ x|upper }} v"


def test_feedback_is_appended_when_the_template_has_no_placeholder(demo_spec, customer_reply_input):
    prompt = render_prompt(demo_spec(), customer_reply_input, feedback="Mention the <refund> & apologise.")
    assert prompt.user.endswith("Mention the <refund> & apologise.")
    assert "A reviewer sent the previous draft back with this feedback" in prompt.user
    assert prompt.user.index("My parcel arrived broken.") < prompt.user.index("Mention the <refund>")


def test_feedback_fills_its_placeholder_and_is_not_appended_twice(demo_data, customer_reply_input):
    data = demo_data()
    data["prompt"]["user"] = "Complaint: {{ complaint }}\nReviewer said: {{ feedback }}\nEnd."
    prompt = render_prompt(parse_definition(data), customer_reply_input, feedback="Be shorter.")
    assert prompt.user == "Complaint: My parcel arrived broken.\nReviewer said: Be shorter.\nEnd."


def test_no_feedback_adds_nothing(demo_spec, customer_reply_input):
    prompt = render_prompt(demo_spec(), customer_reply_input)
    assert "reviewer" not in prompt.user.lower()


def test_json_outputs_get_the_json_instruction(demo_spec, customer_reply_input):
    prompt = render_prompt(demo_spec(), customer_reply_input)
    assert prompt.system.startswith("You write courteous, accurate replies for the support team.")
    assert prompt.system.endswith(JSON_INSTRUCTION)


def test_text_outputs_get_no_json_instruction(demo_data, customer_reply_input):
    data = demo_data()
    data["output"] = {"format": "text"}
    prompt = render_prompt(parse_definition(data), customer_reply_input)
    assert prompt.system == "You write courteous, accurate replies for the support team."


def test_json_instruction_stands_alone_without_a_system_prompt(demo_data, customer_reply_input):
    data = demo_data()
    data["prompt"]["system"] = ""
    prompt = render_prompt(parse_definition(data), customer_reply_input)
    assert prompt.system == JSON_INSTRUCTION


def test_system_prompt_placeholders_are_rendered(demo_data, customer_reply_input):
    data = demo_data()
    data["prompt"]["system"] = "You answer on the {{ channel }} channel."
    prompt = render_prompt(parse_definition(data), customer_reply_input)
    assert prompt.system.startswith("You answer on the email channel.")


def test_feedback_placeholder_in_the_system_prompt_is_filled(demo_data, customer_reply_input):
    # The definition validator allows {{ feedback }} in either part, so both must render it.
    data = demo_data()
    data["prompt"]["system"] = "Earlier feedback to respect: {{ feedback }}"
    prompt = render_prompt(parse_definition(data), customer_reply_input, feedback="No emojis.")
    assert prompt.system.startswith("Earlier feedback to respect: No emojis.")
    assert "No emojis." not in prompt.user, "placed once, not appended as well"
