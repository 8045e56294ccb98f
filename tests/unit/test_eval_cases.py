"""Eval cases without a database: expectations, their check, JSON Lines, and the demo datasets
(every bundled case must fit its workflow's form, or an eval would fail on input, not model)."""
import json
from decimal import Decimal
from pathlib import Path

import pytest

from evals.expectations import CaseError, Outcome, check, parse_expectations
from evals.jsonl import read_cases, write_cases
from evals.runner import intake
from workflows.definitions import parse_yaml

ROOT = Path(__file__).resolve().parents[2]


def outcome(parsed, *, lane="async_review", schema_valid=True, cost="0.001", failure=""):
    return Outcome(content=json.dumps(parsed), parsed=parsed, schema_valid=schema_valid, lane=lane, score=0.8,
                   findings=(), cost_usd=Decimal(cost), latency_ms=10, failure=failure)


def test_each_expectation_passes_and_fails_for_the_right_reason():
    expect = parse_expectations({
        "fields": {"tone": {"equals": "apologetic"}, "reply": {"contains": "REFUND", "regex": "^Dear "},
                   "amount": {"range": [0, 100]}, "decision": {"enum": ["approve", "refer"]}},
        "must_not_auto_approve": True, "max_cost_usd": 0.01,
    })
    good = {"tone": "apologetic", "reply": "Dear Ann, your refund is on its way.", "amount": "42.5", "decision": "refer"}
    assert check(expect, outcome(good)) == []
    bad = {"tone": "neutral", "reply": "Hi Ann.", "amount": 420, "decision": "decline"}
    failures = check(expect, outcome(bad, lane="auto_approve", cost="0.02"))
    assert failures == [
        "tone: expected 'apologetic', got 'neutral'", "reply: expected to contain 'REFUND'", "reply: expected to match /^Dear /",
        "amount: expected a number in [0, 100], got 420", "decision: expected one of ['approve', 'refer'], got 'decline'",
        "auto-approved a case that must not be", "cost $0.02 over the ceiling $0.01",
    ]
    assert check(expect, outcome({}, schema_valid=False))[:2] == ["output does not match the workflow's schema", "tone: missing from the output"]
    assert check(parse_expectations({"lane": "blocking_review"}), outcome(good)) == ["lane: expected blocking_review, got async_review"]
    assert check(parse_expectations({}), outcome(None, failure="provider_unavailable: down")) == ["no draft: provider_unavailable: down"]
    # A boolean is not a number, even though Python says True == 1.
    assert check(parse_expectations({"fields": {"n": {"range": [0, 5]}}}), outcome({"n": True}))


@pytest.mark.parametrize("raw, key, reason", [
    ({"fields": {"tone": {}}}, "fields.tone", "say what the field must be"),
    ({"fields": {"tone": {"regex": "("}}}, "fields.tone.regex", "not a regular expression"),
    ({"fields": {"n": {"range": [5, 1]}}}, "fields.n.range", "above the high end"),
    ({"lane": "fast"}, "lane", "Input should be"),
    ({"must_not_auto_aprove": True}, "must_not_auto_aprove", "Extra inputs are not permitted"),
    ({"max_cost_usd": -1}, "max_cost_usd", "greater than or equal to 0"),
])
def test_bad_expectations_name_the_key(raw, key, reason):
    with pytest.raises(CaseError) as caught:
        parse_expectations(raw)
    assert any(k == key and reason in r for k, r in caught.value.errors), caught.value.errors


def test_json_lines_refuse_the_whole_file_naming_each_bad_line():
    text = "\n".join([
        json.dumps({"id": "ok", "input": {}, "expect": {}}),
        "{not json",
        json.dumps({"id": "ok", "input": {}, "expect": {}}),
        json.dumps({"id": "x", "input": [], "expect": {"lane": "nope"}, "extra": 1}),
        json.dumps(["a list"]),
    ])
    with pytest.raises(CaseError) as caught:
        read_cases(text)
    keys = [k for k, _ in caught.value.errors]
    assert keys == ["line 2", "line 3.id", "line 4", "line 4.input", "line 4.expect.lane", "line 5"]
    with pytest.raises(CaseError, match="no cases"):
        read_cases("\n\n")


def test_json_lines_round_trip():
    text = "".join(json.dumps({"id": f"c{i}", "input": {"a": i}, "expect": {"lane": "auto_approve"}, "note": "n"}) + "\n"
                   for i in range(3))
    cases = read_cases(text)
    assert [c.key for c in cases] == ["c0", "c1", "c2"]
    assert read_cases("".join(write_cases(cases))) == cases


@pytest.mark.parametrize("slug", ["customer-reply", "compliance-report", "underwriting-memo"])
def test_every_demo_case_fits_its_workflow(slug):
    spec = parse_yaml((ROOT / "workflows" / "demo_workflows" / f"{slug}.yaml").read_text())
    cases = read_cases((ROOT / "evals" / "datasets" / f"{slug}.jsonl").read_text())
    assert len(cases) >= 20
    kinds = {"must_not_auto_approve" in c.expect for c in cases}
    assert kinds == {True, False}  # routine cases and cases that must reach a human
    for case in cases:
        values = intake(spec, case.input)
        assert set(values) <= {f.name for s in spec.form.steps for f in s.fields}


def test_intake_names_the_bad_field():
    spec = parse_yaml((ROOT / "workflows" / "demo_workflows" / "customer-reply.yaml").read_text())
    with pytest.raises(CaseError) as caught:
        intake(spec, {"customer_name": "Ann", "channel": "fax", "complaint": "x", "colour": "red"})
    keys = dict(caught.value.errors)
    assert "input.colour" in keys and "input.channel" in keys
