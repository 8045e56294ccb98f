"""Validators and the confidence score (DESIGN.md section 4)."""
from __future__ import annotations

import json
import math

import pytest

from workflows.definitions import parse_definition
from workflows.llm.confidence import certainty_from_logprobs, score, validate_output
from workflows.llm.types import Completion

GOOD_REPLY = json.dumps({"reply": "We are sorry; a refund is on its way.", "tone": "apologetic"})


def _completion(content=GOOD_REPLY, logprobs=None, hint=None) -> Completion:
    return Completion(engine="openai", model="gpt-4o-mini", content=content, token_logprobs=logprobs,
                      certainty_hint=hint)


def _score(spec, content=GOOD_REPLY, logprobs=None, hint=None):
    completion = _completion(content, logprobs, hint)
    validation = validate_output(spec, content)
    value, components = score(completion, validation)
    return value, components, validation


def test_certainty_mean_and_min_token_probability():
    probs = [0.9, 0.5, 0.99, 0.8]
    result = certainty_from_logprobs([math.log(p) for p in probs])
    assert result["mean_token_prob"] == pytest.approx(sum(probs) / 4, abs=1e-6)
    assert result["min_token_prob"] == pytest.approx(0.5, abs=1e-6)


def test_score_from_logprobs_weighs_mean_and_weakest_token(demo_spec):
    probs = [0.99, 0.99, 0.99, 0.6]
    value, components, _ = _score(demo_spec(), logprobs=[math.log(p) for p in probs])
    mean = sum(probs) / len(probs)
    assert components["certainty_source"] == "logprobs"
    assert components["mean_token_prob"] == pytest.approx(mean, abs=1e-6)
    assert components["min_token_prob"] == pytest.approx(0.6, abs=1e-6)
    assert value == pytest.approx(0.5 * mean + 0.5 * 0.6, abs=1e-6)
    assert components["certainty"] == pytest.approx(value, abs=1e-6)
    assert components["validators_passed"] is True and components["findings"] == []


def test_one_unsure_token_pulls_the_score_down(demo_spec):
    sure, _, _ = _score(demo_spec(), logprobs=[math.log(0.99)] * 20)
    one_unsure, _, _ = _score(demo_spec(), logprobs=[math.log(0.99)] * 19 + [math.log(0.2)])
    assert sure > 0.98
    assert one_unsure < 0.62, "the weakest token counts for half, whatever the mean"


def test_perfect_logprobs_give_exactly_one(demo_spec):
    value, _, _ = _score(demo_spec(), logprobs=[0.0, 0.0])
    assert value == 1.0


def test_schema_invalid_caps_the_score_and_names_the_path(demo_spec):
    content = json.dumps({"reply": "Sorry about that.", "tone": "furious"})
    value, components, validation = _score(demo_spec(), content, logprobs=[0.0] * 10)
    assert value <= 0.3
    assert components["certainty"] == 1.0, "the certainty itself is kept, only the score is capped"
    assert "schema_invalid" in components["findings"]
    assert components["validators_passed"] is False
    assert validation.details["schema_invalid"].startswith("tone: ")
    assert "furious" in validation.details["schema_invalid"]


def test_missing_required_key_names_the_root(demo_spec):
    _, _, validation = _score(demo_spec(), json.dumps({"reply": "Hi"}), logprobs=[0.0])
    assert validation.findings == ["schema_invalid"]
    assert validation.details["schema_invalid"] == "(root): 'tone' is a required property"


def test_nested_schema_error_names_the_nested_path(demo_spec):
    content = json.dumps({"title": "t", "summary": "s", "risk_rating": "low", "actions": ["ok", 3]})
    value, _, validation = _score(demo_spec("compliance-report"), content, logprobs=[0.0])
    assert value <= 0.3
    assert validation.details["schema_invalid"].startswith("actions/1: ")


def test_not_json_output(demo_spec):
    value, components, validation = _score(demo_spec(), "Dear customer, sorry.", logprobs=[0.0] * 5)
    assert value <= 0.3
    assert components["findings"] == ["schema_invalid"]
    assert validation.details["schema_invalid"].startswith("not JSON: ")
    assert validation.parsed is None


def test_json_that_is_not_an_object(demo_spec):
    value, _, validation = _score(demo_spec(), json.dumps(["reply", "tone"]), logprobs=[0.0])
    assert value <= 0.3
    assert "is not of type 'object'" in validation.details["schema_invalid"]


@pytest.mark.parametrize("content", ["", "   \n\t "])
def test_empty_output(demo_spec, content):
    value, components, validation = _score(demo_spec(), content, logprobs=[0.0])
    assert value <= 0.3
    assert components["findings"] == ["empty_output"]
    assert validation.details["empty_output"]


def test_length_limit(demo_data):
    data = demo_data()
    data["output"]["max_chars"] = 20
    spec = parse_definition(data)
    value, components, validation = _score(spec, GOOD_REPLY, logprobs=[0.0])
    assert components["findings"] == ["length_exceeded"]
    assert f"{len(GOOD_REPLY)} characters > 20" == validation.details["length_exceeded"]
    assert value <= 0.3


def test_valid_output_is_parsed(demo_spec):
    validation = validate_output(demo_spec(), GOOD_REPLY)
    assert validation.findings == []
    assert validation.parsed == json.loads(GOOD_REPLY)


def test_text_output_is_not_parsed_as_json(demo_data):
    data = demo_data()
    data["output"] = {"format": "text"}
    validation = validate_output(parse_definition(data), "Dear customer, sorry.")
    assert validation.findings == [] and validation.parsed is None


def test_no_logprobs_lands_in_the_middle(demo_spec):
    value, components, _ = _score(demo_spec(), logprobs=None)
    assert value == 0.5
    assert components["certainty_source"] == "none"
    assert "mean_token_prob" not in components


def test_empty_logprob_list_counts_as_none(demo_spec):
    value, components, _ = _score(demo_spec(), logprobs=[])
    assert value == 0.5 and components["certainty_source"] == "none"


def test_offline_hint_is_used_without_logprobs(demo_spec):
    value, components, _ = _score(demo_spec(), hint=0.87)
    assert value == 0.87
    assert components["certainty_source"] == "offline_heuristic"


def test_logprobs_win_over_a_hint(demo_spec):
    value, components, _ = _score(demo_spec(), logprobs=[math.log(0.7)], hint=0.99)
    assert components["certainty_source"] == "logprobs"
    assert value == pytest.approx(0.7, abs=1e-6)


def test_offline_hint_is_capped_by_a_hard_finding(demo_spec):
    value, _, _ = _score(demo_spec(), "not json", hint=0.99)
    assert value <= 0.3


@pytest.mark.parametrize("logprobs, hint", [([math.log(0.7)] * 4, None), (None, None), (None, 0.8)])
@pytest.mark.parametrize("claim", [1.0, "high", 100])
def test_self_reported_confidence_is_ignored(demo_spec, logprobs, hint, claim):
    spec = demo_spec()
    plain = {"reply": "We are sorry.", "tone": "apologetic"}
    boasting = {**plain, "confidence": claim, "certainty": claim, "score": claim}
    base, base_components, _ = _score(spec, json.dumps(plain), logprobs, hint)
    boasted, boasted_components, validation = _score(spec, json.dumps(boasting), logprobs, hint)
    assert validation.findings == [], "the extra keys are schema-valid, so only the score could move"
    assert boasted == base
    assert boasted_components == base_components


def test_score_is_within_unit_interval(demo_spec):
    for logprobs in ([0.0], [-50.0], [math.log(0.5)] * 3):
        value, _, _ = _score(demo_spec(), logprobs=logprobs)
        assert 0.0 <= value <= 1.0
    assert _score(demo_spec(), hint=1.7)[0] == 1.0
    assert _score(demo_spec(), hint=-0.2)[0] == 0.0


def test_json_nested_deeper_than_the_parser_can_go_is_a_finding_not_a_crash(demo_spec):
    validation = validate_output(demo_spec(), "[" * 100_000)
    assert validation.findings == ["schema_invalid"] and validation.parsed is None
