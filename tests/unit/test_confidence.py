"""Validators and the confidence score (DESIGN.md section 4): the basics of ``score(reply,
validation, ...)``. Per-field certainty, alignment, sources and properties are in
test_certainty_*.py."""
from __future__ import annotations

import json
import math

import pytest

from tests.scripted import tokens_of
from workflows.definitions import parse_definition
from workflows.pipeline.confidence import (
    certainty_from_logprobs,
    score,
    value_certainty,
)
from workflows.pipeline.types import EngineReply, TokenLogprob
from workflows.pipeline.validators import validate_output

GOOD_REPLY = json.dumps({"reply": "We are sorry; a refund is on its way.", "tone": "apologetic"})


def reply_of(content: str, logprobs=None, hint=None) -> EngineReply:
    """``logprobs``: None, one per token of ``tokens_of(content)``, or one float for all."""
    token_logprobs = None
    if logprobs is not None:
        pieces = tokens_of(content)
        if isinstance(logprobs, (int, float)):
            logprobs = [logprobs] * len(pieces)
        assert len(logprobs) in (0, len(pieces))
        token_logprobs = tuple(TokenLogprob(t, lp) for t, lp in zip(pieces, logprobs))
    return EngineReply(engine="openai", model_requested="gpt-4o-mini", model_reported="gpt-4o-mini",
                       content=content, finish_reason="stop", token_logprobs=token_logprobs, calls=(),
                       certainty_hint=hint)


def _score(spec, content=GOOD_REPLY, logprobs=None, hint=None, **kwargs):
    validation = validate_output(spec, content)
    schema = spec.output.json_schema if spec.output.format == "json" else None
    value, components = score(reply_of(content, logprobs, hint), validation, json_schema=schema, **kwargs)
    return value, components, validation


def test_whole_answer_statistics():
    probs = [0.9, 0.5, 0.99, 0.8]
    result = certainty_from_logprobs([math.log(p) for p in probs])
    assert result["mean_token_prob"] == pytest.approx(sum(probs) / 4, abs=1e-6)
    assert result["min_token_prob"] == pytest.approx(0.5, abs=1e-6)
    assert result["certainty"] == pytest.approx(value_certainty(probs), abs=1e-6)


def test_value_certainty_is_half_mean_half_tenth_percentile():
    probs = [0.2] + [0.9] * 20  # one token in 21: the 10th percentile does not see it
    assert value_certainty(probs) == pytest.approx(0.5 * (0.2 + 0.9 * 20) / 21 + 0.5 * 0.9)
    assert value_certainty([0.4]) == pytest.approx(0.4)
    assert value_certainty([0.2, 0.8]) == pytest.approx(0.5 * 0.5 + 0.5 * (0.2 * 0.9 + 0.8 * 0.1))


def test_uniform_token_probability_is_the_score(demo_spec):
    for p in (0.99, 0.8, 0.3):
        value, components, _ = _score(demo_spec(), logprobs=math.log(p))
        assert components["certainty_source"] == "logprobs"
        assert components["certainty_basis"] == "fields"
        assert components["alignment"] == "exact"
        assert value == pytest.approx(p, abs=1e-6)
        assert components["fields"] == {"reply": pytest.approx(p, abs=1e-4), "tone": pytest.approx(p, abs=1e-4)}
        assert components["mean_token_prob"] == pytest.approx(p, abs=1e-6)
        assert components["validators_passed"] is True and components["findings"] == []


def test_perfect_logprobs_give_exactly_one(demo_spec):
    value, _, _ = _score(demo_spec(), logprobs=0.0)
    assert value == 1.0


def test_schema_invalid_caps_the_score_and_names_the_path(demo_spec):
    content = json.dumps({"reply": "Sorry about that.", "tone": "furious"})
    value, components, validation = _score(demo_spec(), content, logprobs=0.0)
    assert value <= 0.3
    assert components["certainty"] == 1.0, "the certainty itself is kept, only the score is capped"
    assert "schema_invalid" in components["findings"]
    assert components["validators_passed"] is False
    assert validation.details["schema_invalid"].startswith("tone: ")
    assert "furious" in validation.details["schema_invalid"]


def test_missing_required_key_names_the_root(demo_spec):
    _, _, validation = _score(demo_spec(), json.dumps({"reply": "Hi"}), logprobs=0.0)
    assert validation.findings == ["schema_invalid"]
    assert validation.details["schema_invalid"] == "(root): 'tone' is a required property"


def test_nested_schema_error_names_the_nested_path(demo_spec):
    content = json.dumps({"title": "t", "summary": "s", "risk_rating": "low", "actions": ["ok", 3]})
    value, _, validation = _score(demo_spec("compliance-report"), content, logprobs=0.0)
    assert value <= 0.3
    assert validation.details["schema_invalid"].startswith("actions/1: ")


def test_not_json_output_is_scored_over_the_whole_answer(demo_spec):
    value, components, validation = _score(demo_spec(), "Dear customer, sorry.", logprobs=math.log(0.9))
    assert value <= 0.3
    assert components["findings"] == ["schema_invalid"]
    assert components["certainty_basis"] == "whole_answer"
    assert components["certainty"] == pytest.approx(0.9, abs=1e-6)
    assert validation.details["schema_invalid"].startswith("not JSON: ")
    assert validation.parsed is None


def test_json_that_is_not_an_object(demo_spec):
    value, _, validation = _score(demo_spec(), json.dumps(["reply", "tone"]), logprobs=0.0)
    assert value <= 0.3
    assert "is not of type 'object'" in validation.details["schema_invalid"]


@pytest.mark.parametrize("content", ["", "   \n\t "])
def test_empty_output(demo_spec, content):
    value, components, validation = _score(demo_spec(), content, logprobs=0.0)
    assert value <= 0.3
    assert components["findings"] == ["empty_output"]
    assert validation.details["empty_output"]


def test_length_limit(demo_data):
    data = demo_data()
    data["output"]["max_chars"] = 20
    spec = parse_definition(data)
    value, components, validation = _score(spec, GOOD_REPLY, logprobs=0.0)
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
    assert "mean_token_prob" not in components and "fields" not in components


def test_empty_logprob_list_counts_as_none(demo_spec):
    value, components, _ = _score(demo_spec(), logprobs=[])
    assert value == 0.5 and components["certainty_source"] == "none"


def test_offline_hint_is_used_without_logprobs(demo_spec):
    value, components, _ = _score(demo_spec(), hint=0.87)
    assert value == 0.87
    assert components["certainty_source"] == "offline_heuristic"


def test_logprobs_win_over_a_hint(demo_spec):
    value, components, _ = _score(demo_spec(), logprobs=math.log(0.7), hint=0.99)
    assert components["certainty_source"] == "logprobs"
    assert value == pytest.approx(0.7, abs=1e-6)


def test_offline_hint_is_capped_by_a_hard_finding(demo_spec):
    value, _, _ = _score(demo_spec(), "not json", hint=0.99)
    assert value <= 0.3


def test_score_is_within_unit_interval(demo_spec):
    for logprob in (0.0, -50.0, math.log(0.5), -math.inf, 3.0, math.nan):
        value, components, _ = _score(demo_spec(), logprobs=logprob)
        assert 0.0 <= value <= 1.0
        json.dumps(components, allow_nan=False)
    assert _score(demo_spec(), hint=1.7)[0] == 1.0
    assert _score(demo_spec(), hint=-0.2)[0] == 0.0


def test_json_nested_deeper_than_the_parser_can_go_is_a_finding_not_a_crash(demo_spec):
    validation = validate_output(demo_spec(), "[" * 100_000)
    assert validation.findings == ["schema_invalid"] and validation.parsed is None
    value, components, _ = _score(demo_spec(), "[" * 5_000, logprobs=math.log(0.9))
    assert value <= 0.3 and components["certainty_basis"] == "whole_answer"
