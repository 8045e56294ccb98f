"""routing.hold_rules: a form value that holds a draft for blocking review whatever its score
(the definition key, route(), the reviewer's sentence, the streaming rule), and the
pii_restored finding for personal data from free text that the draft carries. Pure."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.conftest import demo_yaml
from tests.unit.test_draft_stream_rule import streamable_definition
from workflows.definitions import DefinitionError, HoldRuleDef, definition_hash, parse_definition, parse_yaml
from workflows.draft_stream import streams_to_submitter
from workflows.explain import lane_sentence
from workflows.models import Lane
from workflows.pipeline import pii
from workflows.pipeline.engines.offline import OfflineEngine
from workflows.pipeline.run import run
from workflows.pipeline.types import RunOptions
from workflows.routing import route
from workflows.vocab import Finding

DATASETS = Path(__file__).resolve().parents[2] / "evals" / "datasets"


def _compliance(demo_data, **routing) -> dict:
    data = demo_data("compliance-report")
    data["routing"].update(routing)
    return data


def _case(case_id: str) -> dict:
    for line in (DATASETS / "compliance-report.jsonl").read_text().splitlines():
        case = json.loads(line)
        if case["id"] == case_id:
            return case["input"]
    raise AssertionError(f"no case {case_id}")


# --- the definition key ----------------------------------------------------------------------


def test_hold_rules_share_the_rule_shape_of_priority_rules(demo_data):
    spec = parse_definition(_compliance(demo_data, hold_rules=[
        {"field": "severity", "equals": "high"},
        {"field": "customers_affected", "gte": 1000},
        {"field": "regulations", "in": ["AML", "GDPR"]},
    ]))
    equals, gte, within = spec.routing.hold_rules
    assert equals.matches({"severity": "high"}) and not equals.matches({"severity": "medium"})
    assert gte.matches({"customers_affected": 1000}) and not gte.matches({"customers_affected": 999})
    assert not gte.matches({"customers_affected": ""}), "an empty value matches no numeric comparison"
    assert within.matches({"regulations": ["MiFID II", "AML"]}) and not within.matches({"regulations": []})
    assert [r.condition() for r in spec.routing.hold_rules] == [
        {"field": "severity", "equals": "high"}, {"field": "customers_affected", "gte": "1000"},
        {"field": "regulations", "in": ["AML", "GDPR"]}]


@pytest.mark.parametrize(
    "rule, key, reason",
    [
        ({"field": "sevrity", "equals": "high"}, "routing.hold_rules[0].field", "'sevrity' names no form field"),
        # A misspelt choice would hold nothing, silently.
        ({"field": "severity", "equals": "hgh"}, "routing.hold_rules[0].equals",
         "['hgh'] not among the choices of 'severity': ['low', 'medium', 'high']"),
        ({"field": "regulations", "in": ["GDPR", "PSD2"]}, "routing.hold_rules[0].in",
         "['PSD2'] not among the choices of 'regulations': ['GDPR', 'MiFID II', 'AML', 'Consumer Duty']"),
        ({"field": "severity", "gte": 2}, "routing.hold_rules[0].gte", "compares a number, but 'severity' is a choice field"),
    ],
)
def test_a_hold_rule_that_cannot_match_is_refused_naming_the_key(demo_data, rule, key, reason):
    with pytest.raises(DefinitionError) as err:
        parse_definition(_compliance(demo_data, hold_rules=[rule]))
    assert err.value.errors == [(key, reason)]


def test_a_hold_rule_gives_exactly_one_comparison(demo_data):
    for rule in ({"field": "severity"}, {"field": "customers_affected", "gte": 1, "lte": 5}):
        with pytest.raises(DefinitionError) as err:
            parse_definition(_compliance(demo_data, hold_rules=[rule]))
        assert err.value.errors == [("routing.hold_rules[0]", "give exactly one of gte, gt, lte, lt, equals, in")]
    with pytest.raises(DefinitionError) as err:
        parse_definition(_compliance(demo_data, hold_rules=[{"field": "severity", "equals": "high", "priority": "high"}]))
    assert err.value.errors[0][0] == "routing.hold_rules[0].priority", "a hold rule has no priority"


def test_a_yes_no_field_is_held_on_true_or_false(demo_data):
    data = demo_data("underwriting-memo")
    data["routing"]["hold_rules"] = [{"field": "collateral_offered", "equals": "yes"}]
    with pytest.raises(DefinitionError) as err:
        parse_definition(data)
    assert err.value.errors == [("routing.hold_rules[0].equals", "'collateral_offered' is a yes/no field: write true or false")]
    data["routing"]["hold_rules"] = [{"field": "collateral_offered", "equals": False}]
    (rule,) = parse_definition(data).routing.hold_rules
    assert rule.matches({"collateral_offered": False}) and not rule.matches({"collateral_offered": True})


def test_a_definition_without_hold_rules_keeps_its_hash(demo_data):
    # Versions published before the key existed keep their hash (and their model-answer cache key).
    data = _compliance(demo_data)
    data["routing"].pop("hold_rules")
    spec = parse_definition(data)
    assert "hold_rules" not in spec.as_dict()["routing"]
    assert definition_hash(spec.as_dict()) == definition_hash(parse_definition(spec.as_dict()).as_dict())
    held = parse_yaml(demo_yaml("compliance-report"))
    assert parse_definition(held.as_dict()) == held, "the rules round-trip through the stored JSON"


# --- routing ---------------------------------------------------------------------------------


def test_a_confident_draft_of_a_matching_request_is_held_with_the_rule_as_reason(demo_spec):
    policy = demo_spec("compliance-report").routing
    decision = route(0.99, [], policy, draw=0.0, values={"severity": "high"})
    assert (decision.lane, decision.sampled_for_audit) == (Lane.BLOCKING_REVIEW, False)
    assert decision.reason == "held by routing.hold_rules: severity equals high"
    assert [r.condition() for r in decision.held_by] == [{"field": "severity", "equals": "high"}]
    calm = route(0.99, [], policy, draw=0.99, values={"severity": "medium"})
    assert (calm.lane, calm.held_by) == (Lane.AUTO_APPROVE, ())


def test_a_hard_finding_still_names_itself_first(demo_spec):
    decision = route(0.99, ["guardrail"], demo_spec("compliance-report").routing, 0.5, values={"severity": "high"})
    assert decision.lane == Lane.BLOCKING_REVIEW and decision.reason == "hard finding: guardrail"


@given(st.floats(allow_nan=True, allow_infinity=True), st.lists(st.sampled_from([str(f) for f in Finding]), max_size=4),
       st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_a_matching_rule_holds_whatever_the_score_findings_and_draw(score, findings, draw):
    policy = parse_yaml(demo_yaml("compliance-report")).routing
    decision = route(score, findings, policy, draw, values={"severity": "high"})
    assert decision.lane == Lane.BLOCKING_REVIEW and not decision.sampled_for_audit


def test_rules_without_values_fail_safe(demo_spec):
    # A caller that forgets the form values must not skip the rules.
    decision = route(0.99, [], demo_spec("compliance-report").routing, 0.99)
    assert decision.lane == Lane.BLOCKING_REVIEW
    assert decision.reason == "hold rules could not be checked: no form values given"
    assert route(0.99, [], demo_spec("customer-reply").routing, 0.99).lane == Lane.AUTO_APPROVE


def test_the_underwriting_memo_holds_a_thin_trading_history(demo_spec):
    policy = demo_spec("underwriting-memo").routing
    assert route(0.99, [], policy, 0.99, values={"years_trading": 1}).lane == Lane.BLOCKING_REVIEW
    assert route(0.99, [], policy, 0.99, values={"years_trading": 2}).lane == Lane.AUTO_APPROVE


# --- what the reviewer and the submitter read -------------------------------------------------


def test_the_reviewer_reads_the_rule_in_words():
    components = {"routing_reason": "held by routing.hold_rules: severity equals high",
                  "hold_rules": [{"field": "severity", "equals": "high"}]}
    assert (lane_sentence(lane="blocking_review", components=components)
            == "Held because the workflow holds every request with severity high.")
    two = {"hold_rules": [{"field": "years_trading", "lte": "1"}, {"field": "sector", "in": ["retail", "hospitality"]}]}
    assert (lane_sentence(lane="blocking_review", components=two) == "Held because the workflow holds every "
            "request with years trading 1 or less, or with sector retail or hospitality.")
    with_finding = lane_sentence(lane="blocking_review", findings=["length_exceeded"], components=components)
    assert with_finding == ("Held because the workflow holds every request with severity high; also, the draft "
                            "is longer than the workflow allows.")


# --- streaming -------------------------------------------------------------------------------


def test_a_workflow_with_hold_rules_never_streams():
    definition = streamable_definition()
    assert streams_to_submitter(parse_definition(definition))
    definition["routing"]["hold_rules"] = [{"field": "channel", "equals": "chat"}]
    assert not streams_to_submitter(parse_definition(definition))


# --- personal data from free text, restored into the draft ------------------------------------


def test_personal_data_from_the_summary_restored_into_the_draft_is_a_finding(demo_spec):
    spec = demo_spec("compliance-report")
    result = run(spec, _case("cp-18"), engine=OfflineEngine(), options=RunOptions(use_cache=False))
    # What happens today: the account number is found (context word "account") and replaced
    # before the model; the offline draft repeats the summary, so restoring puts it back.
    assert "<US_BANK_NUMBER_1>" not in result.content and "12345678" in result.content
    assert result.findings == (Finding.PII_RESTORED,)
    assert result.components["validator_details"][Finding.PII_RESTORED] == \
        "personal data from the request's free text: US_BANK_NUMBER"
    assert result.score == pytest.approx(0.95), "not a fault: the score is not capped"
    decision = route(result.score, result.findings, spec.routing, 0.99, values=_case("cp-18"))
    assert (decision.lane, decision.reason) == (Lane.BLOCKING_REVIEW, "hard finding: pii_restored")
    # A workflow that does not list it: never auto-approved, released and checked later.
    softer = spec.routing.model_copy(update={"always_block_on": ["schema_invalid"]})
    assert route(result.score, result.findings, softer, 0.99, values=_case("cp-18")).lane == Lane.ASYNC_REVIEW


def test_declared_personal_data_and_pii_allow_are_not_the_finding(demo_spec, demo_data):
    spec = demo_spec("compliance-report")
    # The reporter's e-mail is a pii: true field: restored in every offline draft, by design.
    plain = run(spec, _case("cp-02"), engine=OfflineEngine(), options=RunOptions(use_cache=False))
    assert "reporter2@bank.example" in plain.content and plain.findings == ()
    allow = demo_data("compliance-report")
    allow["pii"] = "allow"
    result = run(parse_definition(allow), _case("cp-18"), engine=OfflineEngine(), options=RunOptions(use_cache=False))
    assert result.findings == ()


def test_pii_restored_counts_only_what_the_answer_carries(demo_spec):
    redaction = pii.redact(demo_spec("compliance-report"),
                           {"summary": "Write to jane.roe@example.com about account 12345678."})
    assert redaction.kinds == ["EMAIL_ADDRESS", "US_BANK_NUMBER"]
    assert pii.pii_restored(json.dumps({"summary": "Account 12345678 was overcharged."}), redaction) == ["US_BANK_NUMBER"]
    assert pii.pii_restored(json.dumps({"summary": "A customer was overcharged."}), redaction) == []


def test_hold_rule_def_is_the_shape_of_a_rule():
    assert set(HoldRuleDef.model_fields) == {"field", "gte", "gt", "lte", "lt", "equals", "in_"}
