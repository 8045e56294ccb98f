"""The offline draft engine: schema-valid, deterministic, and honest about risk."""
from __future__ import annotations

import json

import pytest

from tests.unit.conftest import DEMO_SLUGS
from workflows.definitions import parse_definition
from workflows.pipeline.confidence import score
from workflows.pipeline.engines.offline import MODEL, OfflineEngine
from workflows.pipeline.prompts import render_prompt
from workflows.pipeline.types import ModelRequest, Timeouts
from workflows.pipeline.validators import validate_output

INPUTS = {
    "customer-reply": {"customer_name": "Ann Example", "customer_email": "ann@example.com", "channel": "chat",
                       "complaint": "My parcel arrived broken.", "order_value": "42.50", "refund_offered": True},
    "compliance-report": {"incident_date": "2025-03-01", "business_unit": "wealth", "severity": "medium",
                          "summary": "A statement went to the wrong address.", "customers_affected": 1,
                          "regulations": ["GDPR"], "reporter_email": "ops@example.com"},
    "underwriting-memo": {"business_name": "Bakery Ltd", "sector": "retail", "years_trading": 6,
                          "loan_amount": "50000", "annual_revenue": "400000", "existing_debt": "10000",
                          "notes": "Steady growth.", "collateral_offered": False},
}


def _draft(spec, values, feedback=""):
    prompt = render_prompt(spec, values, feedback=feedback)
    request = ModelRequest(
        model="offline", system=prompt.system, user=prompt.user,
        json_schema=spec.output.json_schema if spec.output.format == "json" else None,
        temperature=0, max_tokens=800, timeouts=Timeouts(connect=5, total=30),
        values=values, field_names=tuple(f.name for f in spec.form.all_fields()),
    )
    return OfflineEngine().complete(request)


@pytest.mark.parametrize("slug", DEMO_SLUGS)
def test_offline_output_validates_against_the_demo_schema(demo_spec, slug):
    spec = demo_spec(slug)
    completion = _draft(spec, INPUTS[slug])
    validation = validate_output(spec, completion.content)
    assert validation.findings == [], validation.details
    assert set(spec.output.json_schema["required"]) <= set(validation.parsed)
    assert completion.engine == "offline" and completion.model_reported == MODEL
    assert completion.token_logprobs is None
    assert completion.calls[0].prompt_tokens > 0 and completion.calls[0].completion_tokens > 0


@pytest.mark.parametrize("slug", DEMO_SLUGS)
def test_offline_output_validates_with_a_sparse_input(demo_spec, slug):
    spec = demo_spec(slug)
    required_only = {f.name: INPUTS[slug][f.name] for f in spec.form.all_fields() if f.required}
    completion = _draft(spec, required_only)
    assert validate_output(spec, completion.content).findings == []


@pytest.mark.parametrize("slug", DEMO_SLUGS)
def test_offline_engine_is_deterministic(demo_spec, slug):
    spec = demo_spec(slug)
    first, second = _draft(spec, INPUTS[slug]), _draft(spec, dict(INPUTS[slug]))
    assert first.content == second.content
    assert first.certainty_hint == second.certainty_hint
    assert (first.calls[0].prompt_tokens, first.calls[0].completion_tokens) == (second.calls[0].prompt_tokens, second.calls[0].completion_tokens)


def test_offline_draft_uses_the_input(demo_spec):
    completion = _draft(demo_spec("underwriting-memo"), INPUTS["underwriting-memo"])
    parsed = json.loads(completion.content)
    assert parsed["recommendation"] in ("approve", "decline", "refer")
    assert "Bakery Ltd" in parsed["rationale"]
    assert isinstance(parsed["risks"], list)


def test_offline_text_output(demo_data):
    data = demo_data()
    data["output"] = {"format": "text"}
    spec = parse_definition(data)
    completion = _draft(spec, INPUTS["customer-reply"])
    assert completion.content.startswith("[offline draft] ")
    assert "My parcel arrived broken." in completion.content


@pytest.mark.parametrize("risky", ["I will sue you", "my lawyer is copied", "this is FRAUD", "Urgent: injury"])
def test_risk_words_lower_the_certainty(demo_spec, risky):
    spec = demo_spec()
    calm = INPUTS["customer-reply"]
    alarming = {**calm, "complaint": f"My parcel arrived broken. {risky}."}
    calm_hint, risky_hint = _draft(spec, calm).certainty_hint, _draft(spec, alarming).certainty_hint
    assert risky_hint < calm_hint
    # Enough to leave the auto-approve lane of the demo policy.
    assert calm_hint >= spec.routing.auto_approve_at
    assert risky_hint < spec.routing.auto_approve_at


def test_more_risk_words_lower_it_further(demo_spec):
    spec = demo_spec()
    one = {**INPUTS["customer-reply"], "complaint": "Please call my lawyer."}
    three = {**INPUTS["customer-reply"], "complaint": "Fraud! My lawyer will sue."}
    assert _draft(spec, three).certainty_hint < _draft(spec, one).certainty_hint


def test_incomplete_input_lowers_the_certainty(demo_spec):
    spec = demo_spec()
    full = INPUTS["customer-reply"]
    sparse = {k: full[k] for k in ("customer_name", "channel", "complaint")}
    assert _draft(spec, sparse).certainty_hint < _draft(spec, full).certainty_hint


def test_offline_certainty_is_the_score_source(demo_spec):
    spec = demo_spec()
    completion = _draft(spec, INPUTS["customer-reply"])
    value, components = score(completion, validate_output(spec, completion.content))
    assert components["certainty_source"] == "offline_heuristic"
    assert value == completion.certainty_hint
    assert 0.05 <= value <= 0.99, "a heuristic never claims full certainty"


@pytest.mark.parametrize("harmless", ["I have an issue with the tissue paper", "Please pursue a replacement",
                                      "The suede strap is fine"])
def test_risk_words_match_whole_words_only(demo_spec, harmless):
    # "issue" contains "sue"; a substring test would send ordinary complaints to review.
    spec = demo_spec()
    calm = INPUTS["customer-reply"]
    other = {**calm, "complaint": f"My parcel arrived broken. {harmless}."}
    assert _draft(spec, other).certainty_hint == _draft(spec, calm).certainty_hint


@pytest.mark.parametrize("inflected", ["They sued us", "Lawyers are involved", "Two injuries reported"])
def test_inflected_risk_words_count(demo_spec, inflected):
    spec = demo_spec()
    calm = INPUTS["customer-reply"]
    risky = {**calm, "complaint": f"My parcel arrived broken. {inflected}."}
    assert _draft(spec, risky).certainty_hint < _draft(spec, calm).certainty_hint
