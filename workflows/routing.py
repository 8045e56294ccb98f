"""The routing policy: a pure function from (score, findings, policy) to a lane."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

from .llm.types import UNRESOLVED_PLACEHOLDER
from .models import Lane

# Findings that block whatever a workflow's policy lists: an answer with a redaction
# placeholder still in it would go out saying "<CUSTOMER_NAME>".
ALWAYS_BLOCKING = frozenset({UNRESOLVED_PLACEHOLDER})


@dataclass(frozen=True)
class RoutingDecision:
    lane: str
    sampled_for_audit: bool
    reason: str


def route(
    score: float,
    findings: Iterable[str],
    *,
    auto_approve_at: float,
    block_below: float,
    always_block_on: Iterable[str],
    audit_sample_rate: float,
    sample_draw: float,
) -> RoutingDecision:
    """Pick a lane.

    ``sample_draw`` is a number in [0, 1) supplied by the caller (derived from the submission
    id) so that this function stays pure and the audit sample is reproducible.
    """
    hard = sorted(set(findings) & (set(always_block_on) | ALWAYS_BLOCKING))
    if hard:
        return RoutingDecision(Lane.BLOCKING_REVIEW, False, f"hard finding: {', '.join(hard)}")
    if score < block_below:
        return RoutingDecision(Lane.BLOCKING_REVIEW, False, f"score {score:.2f} < block_below {block_below:.2f}")
    if score >= auto_approve_at:
        sampled = sample_draw < audit_sample_rate
        return RoutingDecision(
            Lane.AUTO_APPROVE,
            sampled,
            f"score {score:.2f} >= auto_approve_at {auto_approve_at:.2f}"
            + (" (sampled for audit review)" if sampled else ""),
        )
    return RoutingDecision(
        Lane.ASYNC_REVIEW, False, f"{block_below:.2f} <= score {score:.2f} < {auto_approve_at:.2f}"
    )


def sample_draw_for(submission_id: int, attempt: int) -> float:
    """A reproducible pseudo-random draw in [0, 1) for the audit sample."""
    digest = hashlib.sha256(f"audit-sample:{submission_id}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
