"""Validators and the confidence score (DESIGN.md section 4).

The score is always stored with its components so a reviewer or auditor can see why a draft
took its lane. Nothing in the output itself (a "confidence" key the model writes) is read.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from ..definitions import WorkflowDefinition
from .types import Completion

# A hard validator failure caps the score so it can never be auto-approved on certainty alone.
_FAILURE_CAP = 0.3


@dataclass
class Validation:
    parsed: Any = None
    findings: list[str] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)

    def add(self, code: str, detail: str) -> None:
        self.findings.append(code)
        self.details[code] = detail


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_all_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    return True


def validate_output(spec: WorkflowDefinition, content: str) -> Validation:
    result = Validation()
    if not content.strip():
        result.add("empty_output", "the model returned no text")
        return result
    if spec.output.max_chars and len(content) > spec.output.max_chars:
        result.add("length_exceeded", f"{len(content)} characters > {spec.output.max_chars}")
    if spec.output.format == "json":
        try:
            result.parsed = json.loads(content, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            result.add("schema_invalid", f"not JSON: {exc.msg} at position {exc.pos}")
            return result
        except RecursionError:
            # Nesting deeper than the parser's stack (e.g. "[" * 100000).
            result.add("schema_invalid", "not JSON: nested too deeply")
            return result
        except ValueError as exc:  # NaN / Infinity, refused by _refuse_constant
            result.add("schema_invalid", f"not JSON: {exc}")
            return result
        if not _all_finite(result.parsed):
            # 1e400 parses to inf, which no JSON column (nor any reader) accepts.
            result.parsed = None
            result.add("schema_invalid", "a number is too large to represent")
            return result
        validator = jsonschema.Draft202012Validator(spec.output.json_schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(result.parsed))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            result.add("schema_invalid", f"{where}: {error.message}")
    return result


def certainty_from_logprobs(logprobs: list[float]) -> dict[str, float]:
    probs = [math.exp(lp) for lp in logprobs]
    return {"mean_token_prob": round(sum(probs) / len(probs), 6), "min_token_prob": round(min(probs), 6)}


def score(completion: Completion, validation: Validation) -> tuple[float, dict[str, Any]]:
    """Return (score in [0, 1], components)."""
    components: dict[str, Any] = {}
    if completion.token_logprobs:
        components.update(certainty_from_logprobs(completion.token_logprobs))
        # The weakest token matters: one unsure number in a reply is what a reviewer must see.
        certainty = 0.5 * components["mean_token_prob"] + 0.5 * components["min_token_prob"]
        components["certainty_source"] = "logprobs"
    elif completion.certainty_hint is not None:
        certainty = completion.certainty_hint
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
