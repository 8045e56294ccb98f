"""The review page's "why this lane" sentence (workflows/explain.py): one plain sentence for
every lane and every finding kind, no thresholds or codes in it."""
from __future__ import annotations

import pytest

from workflows.explain import FINDING_ORDER, lane_sentence
from workflows.vocab import Finding

LABELS = {"refund_amount": "refund amount", "reply": "reply", "tone": "tone"}


def _no_jargon(sentence: str) -> None:
    assert sentence.endswith(".") and "\n" not in sentence
    for word in ("block_below", "auto_approve_at", "score", "_", ">=", "<"):
        assert word not in sentence, (word, sentence)


def test_held_because_unsure_about_a_named_field():
    components = {"routing_reason": "score 0.42 < block_below 0.60", "low_fields": ["refund_amount"]}
    sentence = lane_sentence(lane="blocking_review", components=components, labels=LABELS)
    assert sentence == "Held because the model was unsure about the refund amount."


def test_two_fields_named_and_more_counted():
    two = lane_sentence(lane="blocking_review", components={"low_fields": ["reply", "tone"]}, labels=LABELS)
    assert two == "Held because the model was unsure about the reply and the tone."
    many = lane_sentence(lane="blocking_review", components={"low_fields": ["reply", "tone", "a_b", "c"]})
    assert many == "Held because the model was unsure about the reply, the tone and 2 more."


def test_nested_low_field_is_named_by_its_top_field():
    sentence = lane_sentence(lane="blocking_review", components={"low_fields": ["risks[2]"]})
    assert sentence == "Held because the model was unsure about the risks."


def test_held_low_score_without_field_detail():
    sentence = lane_sentence(lane="blocking_review", components={"routing_reason": "score 0.3 < block_below 0.6"})
    assert sentence == "Held because the model was unsure of its answer."


def test_not_a_number_score():
    assert lane_sentence(lane="blocking_review", score=float("nan")) == "Held because the draft's confidence could not be measured."


def test_personal_data():
    sentence = lane_sentence(lane="blocking_review", findings=["pii_in_output"],
                             components={"validator_details": {"pii_in_output": "personal data the input did not supply: EMAIL_ADDRESS"}})
    assert sentence == "Held because the draft may contain personal data the request did not supply."


@pytest.mark.parametrize("code", list(Finding))
def test_every_finding_kind_has_a_plain_sentence_in_both_review_lanes(code):
    held = lane_sentence(lane="blocking_review", findings=[code])
    released = lane_sentence(lane="async_review", findings=[code])
    assert held.startswith("Held because ") and released.startswith("Released, but a reviewer checks it because ")
    assert str(code) not in held and str(code) not in released, "a code is not a sentence"
    _no_jargon(held)
    _no_jargon(released)
    assert code in FINDING_ORDER, "every finding has a place in the order"


def test_the_most_serious_finding_leads_and_the_rest_are_counted():
    sentence = lane_sentence(lane="blocking_review", findings=["qa_failed", "pii_in_output", "truncated"])
    assert sentence == "Held because the draft may contain personal data the request did not supply (and 2 other checks)."


@pytest.mark.parametrize(
    "detail, expected",
    [
        ("banned terms: guarantee", "the draft uses a banned term"),
        ("blocked topics: legal", "the draft touches a blocked topic"),
        ("the draft follows an instruction written into the form input", "the draft may follow an instruction written into the request"),
        ("the draft talks about its own approval, review or confidence", "the draft talks about its own approval or confidence"),
    ],
)
def test_guardrail_details_in_words(detail, expected):
    sentence = lane_sentence(lane="blocking_review", findings=["guardrail"], components={"validator_details": {"guardrail": detail}})
    assert sentence == f"Held because {expected}."


def test_schema_findings_name_the_field():
    missing = lane_sentence(lane="blocking_review", findings=["schema_invalid"],
                            components={"validator_details": {"schema_invalid": "(root): 'tone' is a required property"}})
    assert missing == "Held because the draft is missing the tone."
    wrong = lane_sentence(lane="blocking_review", findings=["schema_invalid"], labels={"refund_amount": "refund amount"},
                          components={"validator_details": {"schema_invalid": "refund_amount: 'x' is not of type 'number'"}})
    assert wrong == "Held because the refund amount does not have the expected form."
    not_json = lane_sentence(lane="blocking_review", findings=["schema_invalid"],
                             components={"validator_details": {"schema_invalid": "not JSON: Expecting value at position 0"}})
    assert not_json == "Held because the draft does not have the expected form."


def test_automation_held():
    sentence = lane_sentence(lane="blocking_review", findings=["guardrail"],
                             components={"routing_reason": "automation held: stopped by wfadmin"})
    assert sentence == "Held because automated release is paused for this workflow (stopped by wfadmin)."


def test_async_between_thresholds():
    sentence = lane_sentence(lane="async_review", components={"routing_reason": "0.60 <= score 0.75 < 0.90"})
    assert sentence == "Released, but a reviewer checks it because the model was fairly, not fully, sure."
    named = lane_sentence(lane="async_review", components={"low_fields": ["tone"]})
    assert named == "Released, but a reviewer checks it because the model was not fully sure about the tone."


def test_sampled_and_auto_approved():
    assert lane_sentence(lane="auto_approve", sampled=True) == "Released, sampled for a quality check."
    assert lane_sentence(lane="auto_approve") == "Released automatically: the model was sure and every check passed."


@pytest.mark.parametrize("components", [None, {}, {"low_fields": None}, {"validator_details": "junk"}, {"low_fields": [3, None]}])
def test_odd_components_never_break_it(components):
    _no_jargon(lane_sentence(lane="blocking_review", findings=["schema_invalid"], components=components))
    _no_jargon(lane_sentence(lane="async_review", components=components))
