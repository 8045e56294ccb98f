"""The routing policy: a pure function from (score, findings, policy, draw) to a lane, and
beside it what each lane does (its effects), so the two are read and changed together."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Protocol, Sequence

from .models import Lane
from .vocab import ALWAYS_BLOCKING


class Policy(Protocol):
    """What routing reads from a workflow definition (``definitions.RoutingDef``)."""

    auto_approve_at: float
    block_below: float
    always_block_on: Iterable[str]
    audit_sample_rate: float
    hold_rules: Sequence[Any]  # definitions.HoldRuleDef: .matches(values), .condition()


@dataclass(frozen=True)
class RoutingDecision:
    lane: str
    sampled_for_audit: bool
    reason: str
    # The routing.hold_rules that held the draft (definitions.HoldRuleDef), when they decided.
    held_by: tuple = ()


def route(score: float, findings: Iterable[str], policy: Policy, draw: float, hold: str = "",
          values: Mapping[str, Any] | None = None) -> RoutingDecision:
    """Pick a lane.

    ``draw`` is a number in [0, 1) supplied by the caller (``sample_draw_for``) so that this
    function stays pure and the audit sample is reproducible. ``hold`` says why the workflow's
    automation is held (stopped by an admin, paused by the quality monitor): then every draft
    waits for a person, whatever its score. ``values`` are the request's form values, which
    ``policy.hold_rules`` are matched against; a caller that has rules to honour and passes no
    values gets blocking review (fail safe), never a skipped rule.
    """
    if hold:
        return RoutingDecision(Lane.BLOCKING_REVIEW, False, f"automation held: {hold}")
    hard = sorted(set(findings) & (set(policy.always_block_on) | ALWAYS_BLOCKING))
    if hard:
        return RoutingDecision(Lane.BLOCKING_REVIEW, False, f"hard finding: {', '.join(hard)}")
    # A policy shaped before hold rules existed (a test's SimpleNamespace) has none.
    rules = tuple(getattr(policy, "hold_rules", ()) or ())
    if rules and values is None:
        return RoutingDecision(Lane.BLOCKING_REVIEW, False, "hold rules could not be checked: no form values given")
    held_by = tuple(rule for rule in rules if rule.matches(values))
    if held_by:
        return RoutingDecision(Lane.BLOCKING_REVIEW, False, "held by routing.hold_rules: "
                               + "; ".join(describe_rule(rule) for rule in held_by), held_by=held_by)
    if not math.isfinite(score):
        # Fail safe: a score that is not a number says nothing, so a human looks.
        return RoutingDecision(Lane.BLOCKING_REVIEW, False, f"score {score} is not a number")
    if score < policy.block_below:
        return RoutingDecision(
            Lane.BLOCKING_REVIEW, False, f"score {score:.2f} < block_below {policy.block_below:.2f}"
        )
    found = sorted(set(findings))
    if score >= policy.auto_approve_at and found:
        # However low a workflow sets its thresholds, a draft with a finding is never released
        # without a person looking at it later: the best it gets is the async lane.
        return RoutingDecision(Lane.ASYNC_REVIEW, False, f"finding {', '.join(found)}: never auto-approved")
    if score >= policy.auto_approve_at:
        sampled = draw < policy.audit_sample_rate
        return RoutingDecision(
            Lane.AUTO_APPROVE,
            sampled,
            f"score {score:.2f} >= auto_approve_at {policy.auto_approve_at:.2f}"
            + (" (sampled for audit review)" if sampled else ""),
        )
    return RoutingDecision(
        Lane.ASYNC_REVIEW, False, f"{policy.block_below:.2f} <= score {score:.2f} < {policy.auto_approve_at:.2f}"
    )


def describe_rule(rule) -> str:
    """A hold rule as the numbers view shows it: ``severity equals high``, ``years_trading lte 1``."""
    key, value = rule.comparison
    shown = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return f"{rule.field} {key} {shown}"


def sample_draw_for(submission_id: int, attempt: int) -> float:
    """A reproducible pseudo-random draw in [0, 1) for the audit sample."""
    digest = hashlib.sha256(f"audit-sample:{submission_id}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class LaneEffects:
    """What happens when a draft lands in a lane (applied by services.draft_record)."""

    release_now: bool  # the output goes out before any human looks at it
    approve_now: bool  # the submission is approved without a reviewer
    review_lane: str | None  # the queue a review task is opened in, if any


LANE_EFFECTS: dict[str, LaneEffects] = {
    Lane.AUTO_APPROVE: LaneEffects(release_now=True, approve_now=True, review_lane=None),
    Lane.ASYNC_REVIEW: LaneEffects(release_now=True, approve_now=False, review_lane=Lane.ASYNC_REVIEW),
    Lane.BLOCKING_REVIEW: LaneEffects(release_now=False, approve_now=False, review_lane=Lane.BLOCKING_REVIEW),
}
# An auto-approved draft drawn for the audit sample is also reviewed, after the fact.
AUDIT_SAMPLE_REVIEW_LANE = Lane.ASYNC_REVIEW


def effects_of(decision: RoutingDecision) -> LaneEffects:
    effects = LANE_EFFECTS[decision.lane]
    if decision.sampled_for_audit:
        return LaneEffects(effects.release_now, effects.approve_now, AUDIT_SAMPLE_REVIEW_LANE)
    return effects
