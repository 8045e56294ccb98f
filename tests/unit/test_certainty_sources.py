"""Where certainty comes from when the provider gives no logprobs, and what can only lower it:
agreement between two samples, the QA grade, the offline heuristic, nothing."""
from __future__ import annotations

import json
import math

import pytest

from workflows.pipeline.confidence import agreement, agreement_by_field, score
from workflows.pipeline.types import EngineReply, TokenLogprob
from workflows.pipeline.validators import Validation

SCHEMA = {"type": "object", "properties": {"reply": {"type": "string"}, "tone": {"enum": ["apologetic", "neutral"]}}}
CONTENT = json.dumps({"reply": "We are sorry.", "tone": "neutral"})


def reply_of(*, p=None, hint=None, content=CONTENT) -> EngineReply:
    tokens = None if p is None else tuple(TokenLogprob(t, math.log(p)) for t in content.split(" "))
    return EngineReply(engine="openai", model_requested="m", model_reported="m", content=content,
                       finish_reason="stop", token_logprobs=tokens, calls=(), certainty_hint=hint)


def run(*, p=None, hint=None, findings=(), **kwargs):
    validation = Validation(parsed=json.loads(CONTENT), findings=list(findings))
    return score(reply_of(p=p, hint=hint), validation, json_schema=SCHEMA, **kwargs)


def test_agreement_supplies_the_certainty_without_logprobs():
    value, components = run(agreement=0.83, qa_grade=0.95, hint=0.99)
    assert value == 0.83
    assert components["certainty_source"] == "agreement"
    assert components["agreement"] == 0.83 and components["qa_grade"] == 0.95


def test_per_field_agreement_is_shown_per_field():
    value, components = run(agreement={"reply": 0.9, "tone": 0.0, "confidence": 1.0})
    assert components["certainty_source"] == "agreement"
    assert components["fields"] == {"reply": 0.9, "tone": 0.0}, "an undeclared key is not part of the answer"
    assert components["low_fields"] == ["tone"]
    assert value == pytest.approx(0.5 * 0.45 + 0.5 * 0.0)
    assert components["agreement_fields"] == {"reply": 0.9, "tone": 0.0}, "kept, so a re-score can pass it again"
    again = run(agreement=components["agreement_fields"], qa_grade=0.1)[1]
    assert again["fields"] == components["fields"] and again["certainty_limited_by"] == "qa"


def test_the_qa_grade_comes_next():
    value, components = run(qa_grade=0.72, hint=0.99)
    assert value == 0.72 and components["certainty_source"] == "qa"


def test_then_the_offline_heuristic_then_nothing():
    assert run(hint=0.87)[1]["certainty_source"] == "offline_heuristic"
    value, components = run()
    assert value == 0.5 and components["certainty_source"] == "none"


def test_a_qa_grade_can_only_lower_logprob_certainty():
    high, components = run(p=0.95, qa_grade=0.99)
    assert high == pytest.approx(0.95) and components["certainty_source"] == "logprobs"
    assert "certainty_limited_by" not in components
    low, components = run(p=0.95, qa_grade=0.4)
    assert low == 0.4
    assert components["certainty_source"] == "logprobs" and components["certainty_limited_by"] == "qa"
    assert components["fields"]["reply"] == pytest.approx(0.95), "the fields still show the model's own certainty"


def test_agreement_beside_logprobs_can_only_lower_too():
    assert run(p=0.95, agreement=1.0)[0] == pytest.approx(0.95)
    value, components = run(p=0.95, agreement=0.5)
    assert value == 0.5 and components["certainty_limited_by"] == "agreement"


def test_a_grade_lowers_a_weaker_source_too():
    value, components = run(agreement=0.9, qa_grade=0.6)
    assert value == 0.6
    assert components["certainty_source"] == "agreement" and components["certainty_limited_by"] == "qa"


@pytest.mark.parametrize("kwargs", [{"agreement": 0.99}, {"qa_grade": 0.99}, {"hint": 0.99}, {"p": 0.99}])
def test_any_finding_caps_every_source(kwargs):
    value, components = run(findings=["guardrail"], **kwargs)
    assert value == 0.3
    assert components["validators_passed"] is False


@pytest.mark.parametrize("grade, expected", [(1.7, 1.0), (-0.2, 0.0), (math.nan, 0.0)])
def test_grades_are_clamped(grade, expected):
    assert run(qa_grade=grade)[0] == expected


# --- agreement between two samples -----------------------------------------------------------


def test_identical_samples_agree():
    a = {"reply": "We are sorry.", "tone": "neutral", "risks": ["a", "b"], "n": 3, "ok": True, "x": None}
    assert agreement(a, json.loads(json.dumps(a))) == 1.0


def test_agreement_ignores_case_spacing_and_end_punctuation():
    assert agreement({"tone": "Neutral."}, {"tone": " neutral"}) == 1.0


def test_a_different_choice_or_number_disagrees():
    fields = agreement_by_field({"tone": "neutral", "amount": 12500, "reply": "Same words here"},
                                {"tone": "apologetic", "amount": 12000, "reply": "Same words here"})
    assert fields == {"tone": 0.0, "amount": 0.0, "reply": 1.0}
    assert agreement({"a": 1, "b": 1}, {"a": 1, "b": 2}) == pytest.approx(0.5 * 0.5 + 0.5 * 0.0)


def test_long_text_counts_common_words():
    a = "Thank you for writing; the refund of twelve pounds is on its way to your card."
    b = "Thank you for writing; the refund of twelve pounds will reach your card soon."
    value = agreement(a, b)
    assert 0.5 < value < 1.0
    assert agreement_by_field(a, b) == {"(root)": value}


def test_lists_match_items_in_any_order_and_count_missing_ones():
    assert agreement({"risks": ["thin margins", "seasonal demand"]}, {"risks": ["Seasonal demand", "thin margins"]}) == 1.0
    assert agreement_by_field({"risks": ["a", "b"]}, {"risks": ["a"]}) == {"risks": 0.5}
    assert agreement({"risks": []}, {"risks": []}) == 1.0


def test_a_missing_field_or_another_type_disagrees():
    assert agreement_by_field({"a": "x"}, {"b": "x"}) == {"a": 0.0, "b": 0.0}
    assert agreement({"a": 1}, {"a": "1"}) == 0.0
    assert agreement({"a": True}, {"a": 1}) == 0.0


def test_a_shared_self_rating_is_not_agreement():
    a = {"reply": "Yes", "confidence": 1.0}
    b = {"reply": "No", "confidence": 1.0}
    assert agreement(a, b, json_schema=SCHEMA) == 0.0
    assert agreement(a, b) > 0.0, "without a schema every key counts"
