"""The routing policy is a pure function (DESIGN.md section 4): table tests at the thresholds."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from workflows.models import Lane
from workflows.routing import route, sample_draw_for
from workflows.vocab import Finding

POLICY = {
    "auto_approve_at": 0.90,
    "block_below": 0.60,
    "always_block_on": ["schema_invalid", "pii_in_output", "guardrail"],
    "audit_sample_rate": 0.05,
}
NEVER_SAMPLED = 0.99  # a draw above every rate used below


def _route(score, findings=(), *, sample_draw=NEVER_SAMPLED, **overrides):
    return route(score, findings, SimpleNamespace(**{**POLICY, **overrides}), sample_draw)


@pytest.mark.parametrize(
    "score, lane",
    [
        (1.0, Lane.AUTO_APPROVE),
        (0.95, Lane.AUTO_APPROVE),
        (0.90, Lane.AUTO_APPROVE),  # == auto_approve_at
        (0.8999999, Lane.ASYNC_REVIEW),
        (0.75, Lane.ASYNC_REVIEW),
        (0.60, Lane.ASYNC_REVIEW),  # == block_below
        (0.5999999, Lane.BLOCKING_REVIEW),
        (0.3, Lane.BLOCKING_REVIEW),
        (0.0, Lane.BLOCKING_REVIEW),
    ],
)
def test_lanes_at_and_around_the_thresholds(score, lane):
    decision = _route(score)
    assert decision.lane == lane
    assert decision.sampled_for_audit is False


def test_equal_thresholds_leave_no_async_lane():
    assert _route(0.8, auto_approve_at=0.8, block_below=0.8).lane == Lane.AUTO_APPROVE
    assert _route(0.7999, auto_approve_at=0.8, block_below=0.8).lane == Lane.BLOCKING_REVIEW


@pytest.mark.parametrize("finding", ["schema_invalid", "pii_in_output", "guardrail"])
def test_hard_finding_forces_blocking_even_at_full_score(finding):
    decision = _route(1.0, [finding], sample_draw=0.0)
    assert decision.lane == Lane.BLOCKING_REVIEW
    assert finding in decision.reason
    assert decision.sampled_for_audit is False


def test_all_hard_findings_are_named():
    decision = _route(0.95, ["guardrail", "length_exceeded", "schema_invalid"])
    assert decision.lane == Lane.BLOCKING_REVIEW
    assert "guardrail" in decision.reason and "schema_invalid" in decision.reason
    assert "length_exceeded" not in decision.reason


@pytest.mark.parametrize(
    "score, lane", [(1.0, Lane.ASYNC_REVIEW), (0.7, Lane.ASYNC_REVIEW), (0.4, Lane.BLOCKING_REVIEW)]
)
def test_finding_not_in_always_block_on_does_not_force_blocking_but_is_never_auto_approved(score, lane):
    assert _route(score, ["length_exceeded"]).lane == lane
    # The same finding forces blocking once the policy lists it.
    assert _route(score, ["length_exceeded"], always_block_on=["length_exceeded"]).lane == Lane.BLOCKING_REVIEW


def test_empty_always_block_on_lets_the_score_decide_short_of_auto_approval():
    assert _route(0.95, ["schema_invalid"], always_block_on=[]).lane == Lane.ASYNC_REVIEW
    assert _route(0.5, ["schema_invalid"], always_block_on=[]).lane == Lane.BLOCKING_REVIEW


def test_thresholds_under_the_finding_cap_cannot_auto_approve_a_guardrail_finding():
    # The score cap (0.3) alone would not hold with auto_approve_at 0.3.
    decision = _route(0.3, ["guardrail"], always_block_on=[], auto_approve_at=0.3, block_below=0.25)
    assert decision.lane == Lane.ASYNC_REVIEW and "never auto-approved" in decision.reason


def test_an_empty_answer_always_blocks():
    assert _route(0.95, ["empty_output"], always_block_on=[]).lane == Lane.BLOCKING_REVIEW


@pytest.mark.parametrize(
    "draw, rate, sampled",
    [
        (0.0, 0.05, True),
        (0.0499, 0.05, True),
        (0.05, 0.05, False),  # the draw must fall strictly below the rate
        (0.5, 0.05, False),
        (0.0, 0.0, False),  # rate 0: never sampled
        (0.999999, 1.0, True),  # rate 1: always sampled
    ],
)
def test_audit_sampling_of_auto_approved_drafts(draw, rate, sampled):
    decision = _route(0.95, sample_draw=draw, audit_sample_rate=rate)
    assert decision.lane == Lane.AUTO_APPROVE
    assert decision.sampled_for_audit is sampled
    assert ("sampled for audit" in decision.reason) is sampled


@pytest.mark.parametrize("score", [0.7, 0.3])
def test_only_auto_approved_drafts_are_sampled(score):
    # Drafts below auto_approve_at are reviewed anyway; sampling them would double the work.
    assert _route(score, sample_draw=0.0, audit_sample_rate=1.0).sampled_for_audit is False


def test_reason_states_the_comparison():
    assert _route(0.95).reason == "score 0.95 >= auto_approve_at 0.90"
    assert _route(0.7).reason == "0.60 <= score 0.70 < 0.90"
    assert _route(0.3).reason == "score 0.30 < block_below 0.60"


def test_route_accepts_any_iterable_of_findings():
    assert _route(1.0, iter(["guardrail"])).lane == Lane.BLOCKING_REVIEW
    assert _route(1.0, ("guardrail",), always_block_on=iter(["guardrail"])).lane == Lane.BLOCKING_REVIEW


def test_sample_draw_is_deterministic_and_in_unit_interval():
    draws = [sample_draw_for(submission_id, attempt) for submission_id in range(1, 501) for attempt in (1, 2)]
    assert draws == [sample_draw_for(s, a) for s in range(1, 501) for a in (1, 2)]
    assert all(0.0 <= d < 1.0 for d in draws)
    # Different submissions and attempts draw differently, and the draws spread over [0, 1).
    assert len(set(draws)) == len(draws)
    share_below_tenth = sum(d < 0.1 for d in draws) / len(draws)
    assert 0.05 < share_below_tenth < 0.15
    assert sample_draw_for(7, 1) != sample_draw_for(7, 2)


def test_sample_draw_is_stable_across_processes():
    # Derived from SHA-256, not Python's salted hash(): the same submission is sampled in the
    # web process, the worker and a replay.
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import django; django.setup(); from workflows.routing import sample_draw_for; "
        "print(repr(sample_draw_for(42, 3)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123", "DJANGO_SETTINGS_MODULE": "reviewdesk.settings"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert float(out.stdout.strip().splitlines()[-1]) == sample_draw_for(42, 3)


def test_an_unresolved_placeholder_blocks_even_when_the_policy_does_not_list_it():
    policy = SimpleNamespace(auto_approve_at=0.9, block_below=0.6, always_block_on=[], audit_sample_rate=0.0)
    for finding in (Finding.UNRESOLVED_PLACEHOLDER, Finding.TRUNCATED):
        decision = route(1.0, [finding], policy, 0.5)
        assert decision.lane == Lane.BLOCKING_REVIEW
        assert finding in decision.reason


@pytest.mark.parametrize("score", [1.0, 0.75, 0.1, float("nan")])
def test_held_automation_sends_every_draft_to_a_person(score):
    decision = route(score, (), SimpleNamespace(**POLICY), 0.0, hold="stopped by an admin: model incident")
    assert (decision.lane, decision.sampled_for_audit) == (Lane.BLOCKING_REVIEW, False)
    assert decision.reason == "automation held: stopped by an admin: model incident"
