"""Properties of the two pure cores everything else trusts: the routing policy (route) and the
canonical JSON the audit chain hashes. Pure: no database, no Redis (tests/conftest.py marks
them ``pure``; tests/unit/test_repo_checks.py runs them with neither configured).
"""
from __future__ import annotations

import datetime
import json
import math
import random
from decimal import Decimal

from hypothesis import example, given
from hypothesis import strategies as st

from workflows.audit import GENESIS_HASH, _as_stored, canonical_json, compute_hash
from workflows.definitions import RoutingDef
from workflows.models import AuditEvent, Lane
from workflows.routing import route, sample_draw_for
from workflows.vocab import ALWAYS_BLOCKING, Finding

# --- route() --------------------------------------------------------------------------------

# How far from review a lane is: raising the score may only move a draft up this order.
RANK = {Lane.BLOCKING_REVIEW: 0, Lane.ASYNC_REVIEW: 1, Lane.AUTO_APPROVE: 2}
FINDINGS = [str(f) for f in Finding]

unit = st.floats(min_value=0.0, max_value=1.0)
scores = unit | st.floats(allow_nan=False, allow_infinity=False)  # the policy must be total beyond [0, 1]
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
# Findings the pipeline reports, and codes it does not know (they must never block by themselves).
findings = st.lists(st.sampled_from(FINDINGS) | st.sampled_from(["unknown_code", ""]), max_size=6)


@st.composite
def policies(draw) -> RoutingDef:
    """Valid routing sections, as a published definition has them (RoutingDef validates)."""
    low, high = sorted([draw(unit), draw(unit)])
    return RoutingDef(
        block_below=low,
        auto_approve_at=high,
        always_block_on=draw(st.lists(st.sampled_from(FINDINGS), unique=True)),
        audit_sample_rate=draw(unit),
    )


def hard_findings(policy: RoutingDef) -> set[str]:
    return set(policy.always_block_on) | {str(f) for f in ALWAYS_BLOCKING}


@given(scores, findings, policies(), draws)
def test_route_is_total_and_its_decision_is_well_formed(score, found, policy, draw):
    decision = route(score, found, policy, draw)
    assert decision.lane in RANK
    assert isinstance(decision.sampled_for_audit, bool)
    assert decision.reason
    assert route(score, list(found), policy, draw) == decision, "same inputs, same decision"


@given(non_finite, findings, policies(), draws)
def test_a_score_that_is_not_a_number_always_goes_to_a_human(score, found, policy, draw):
    decision = route(score, found, policy, draw)
    assert decision.lane == Lane.BLOCKING_REVIEW and not decision.sampled_for_audit


@given(scores, scores, findings, policies(), draws)
def test_raising_the_score_never_moves_a_draft_towards_more_review(a, b, found, policy, draw):
    low, high = sorted([a, b])
    assert RANK[route(low, found, policy, draw).lane] <= RANK[route(high, found, policy, draw).lane]


@given(scores, findings, policies(), draws, st.data())
def test_any_always_blocking_finding_blocks_whatever_the_score_and_draw(score, found, policy, draw, data):
    hard = data.draw(st.sampled_from(sorted(hard_findings(policy))))
    decision = route(score, [*found, hard], policy, draw)
    assert decision.lane == Lane.BLOCKING_REVIEW
    assert not decision.sampled_for_audit
    assert hard in decision.reason


@given(scores, findings, policies(), draws)
def test_without_a_blocking_finding_the_lane_follows_the_thresholds(score, found, policy, draw):
    soft = [f for f in found if f not in hard_findings(policy)]
    decision = route(score, soft, policy, draw)
    if score < policy.block_below:
        assert decision.lane == Lane.BLOCKING_REVIEW
    elif score >= policy.auto_approve_at and not soft:
        assert decision.lane == Lane.AUTO_APPROVE
    else:
        # Between the thresholds, or above them with a finding: a draft with any finding is
        # never auto-approved, however low the workflow set its thresholds.
        assert decision.lane == Lane.ASYNC_REVIEW


@given(scores, findings, policies(), draws)
@example(0.95, [], RoutingDef(audit_sample_rate=0.05), 0.05)  # draw == rate: not sampled
@example(0.95, [], RoutingDef(audit_sample_rate=0.0), 0.0)  # rate 0: never sampled
def test_sampled_for_audit_exactly_when_auto_approved_and_the_draw_is_under_the_rate(score, found, policy, draw):
    decision = route(score, found, policy, draw)
    expected = decision.lane == Lane.AUTO_APPROVE and draw < policy.audit_sample_rate
    assert decision.sampled_for_audit is expected


@given(st.integers(min_value=1, max_value=2**63 - 1), st.integers(min_value=1, max_value=1000))
def test_the_audit_draw_is_reproducible_and_in_the_unit_interval(submission_id, attempt):
    value = sample_draw_for(submission_id, attempt)
    assert 0.0 <= value < 1.0
    assert sample_draw_for(submission_id, attempt) == value


# --- canonical JSON -------------------------------------------------------------------------

# Text PostgreSQL can store in jsonb: no NUL, no lone surrogate (neither encodes as UTF-8 text).
storable_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
json_numbers = st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | json_numbers | storable_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(storable_text, inner, max_size=4),
    max_leaves=15,
)
payloads = st.dictionaries(storable_text, json_values, max_size=6)


def reordered(value, rnd: random.Random):
    """The same JSON value with every object's keys in another order."""
    if isinstance(value, dict):
        keys = list(value)
        rnd.shuffle(keys)
        return {k: reordered(value[k], rnd) for k in keys}
    if isinstance(value, list):
        return [reordered(v, rnd) for v in value]
    return value


def through_jsonb(value):
    """What PostgreSQL's jsonb hands back for ``value`` as psycopg sends it (json.dumps) and
    reads it (json.loads): jsonb keeps each number as an exact decimal and prints it without
    an exponent, so 1e+16 comes back as the integer 10000000000000000, 5.0 as 5.0."""

    def numbers(v):
        if isinstance(v, dict):
            return {k: numbers(x) for k, x in v.items()}
        if isinstance(v, list):
            return [numbers(x) for x in v]
        if isinstance(v, Decimal):
            return json.loads(format(v, "f"))  # int when there is no decimal point
        return v

    return numbers(json.loads(json.dumps(value), parse_float=Decimal))


def event_with(payload) -> AuditEvent:
    return AuditEvent(created_at=datetime.datetime(2025, 1, 31, 12, 0, tzinfo=datetime.UTC), actor_label="system",
                      action="draft.routed", object_type="draft", object_id="7", payload=payload,
                      request_id="req-1", ip="127.0.0.1")


@given(json_values, st.randoms(use_true_random=False))
def test_key_order_does_not_change_the_encoding(value, rnd):
    assert canonical_json(reordered(value, rnd)) == canonical_json(value)


@given(json_values)
def test_the_encoding_is_json_for_the_same_value(value):
    assert json.loads(canonical_json(value)) == value


@given(payloads)
def test_as_stored_is_idempotent(payload):
    stored = _as_stored(payload)
    assert _as_stored(stored) == stored
    assert canonical_json(_as_stored(stored)) == canonical_json(stored)


@given(payloads, st.randoms(use_true_random=False))
@example({"n": 1e16, "m": -0.0, "k": 5.0, "f": 0.1, "big": 1e300, "tiny": 1.5e-7}, random.Random(0))
def test_a_stored_payload_read_back_hashes_as_when_it_was_written(payload, rnd):
    stored = _as_stored(payload)  # what audit.record puts in the row and hashes
    read_back = reordered(through_jsonb(stored), rnd)  # jsonb keeps no key order either
    assert canonical_json(read_back) == canonical_json(stored)
    assert compute_hash(GENESIS_HASH, event_with(read_back)) == compute_hash(GENESIS_HASH, event_with(stored))


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_integral_floats_are_stored_as_ints_and_others_keep_their_value(number):
    stored = _as_stored({"n": number})["n"]
    if number == int(number):
        assert type(stored) is int
        assert Decimal(repr(number)) == stored  # the value its JSON spelling names
    else:
        assert type(stored) is float and stored == number


@given(st.integers(min_value=-(2**53), max_value=2**53))
def test_a_number_written_as_5_or_5_point_0_hashes_the_same(n):
    as_int, as_float = _as_stored({"n": n}), _as_stored({"n": float(n)})
    assert canonical_json(as_int) == canonical_json(as_float)
    assert compute_hash(GENESIS_HASH, event_with(as_int)) == compute_hash(GENESIS_HASH, event_with(as_float))

