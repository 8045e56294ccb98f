"""The confidence score (DESIGN.md section 4).

The score is always stored with its components so a reviewer or auditor can see why a draft
took its lane. Nothing in the output itself (a "confidence" key the model writes) is read.
"""
from __future__ import annotations

import math
from typing import Any

from .types import EngineReply
from .validators import Validation

# A hard validator failure caps the score so it can never be auto-approved on certainty alone.
_FAILURE_CAP = 0.3


def certainty_from_logprobs(logprobs: list[float]) -> dict[str, float]:
    probs = [math.exp(lp) for lp in logprobs]
    return {"mean_token_prob": round(sum(probs) / len(probs), 6), "min_token_prob": round(min(probs), 6)}


def score(reply: EngineReply, validation: Validation) -> tuple[float, dict[str, Any]]:
    """Return (score in [0, 1], components)."""
    components: dict[str, Any] = {}
    if reply.token_logprobs:
        components.update(certainty_from_logprobs([t.logprob for t in reply.token_logprobs]))
        # The weakest token matters: one unsure number in a reply is what a reviewer must see.
        certainty = 0.5 * components["mean_token_prob"] + 0.5 * components["min_token_prob"]
        components["certainty_source"] = "logprobs"
    elif reply.certainty_hint is not None:
        certainty = reply.certainty_hint
        components["certainty_source"] = "offline_heuristic"
    else:
        # A provider without logprobs gives us nothing to trust: land in the middle, not the top.
        certainty = 0.5
        components["certainty_source"] = "none"
    components["certainty"] = round(certainty, 6)
    components["validators_passed"] = not validation.findings
    components["findings"] = list(validation.findings)
    value = certainty if not validation.findings else min(certainty, _FAILURE_CAP)
    value = round(max(0.0, min(1.0, value)), 6)
    return value, components
