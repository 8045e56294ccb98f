"""Why a draft is in its lane, in one plain sentence a reviewer reads first.

The routing reason stored with a draft ("score 0.42 < block_below 0.60") is exact but written
for engineers; the review page leads with a sentence built here from the same facts (lane,
findings, per-field certainty, the audit sample, an automation hold) and keeps the numbers
below it. A pure function of plain values, so every lane and finding kind is unit-tested
(tests/unit/test_explain.py).

Rules, first match wins:
1. automation held (an admin stopped it, or the quality monitor paused it) -> that;
1a. held by one of the workflow's hold rules (``routing.hold_rules``, a rule about the request,
   not the draft) -> the rule in words ("... every request with severity high");
2. a finding -> the most serious one, in words (personal data, guardrail, format, cut off ...);
3. low certainty -> the fields the model was least sure of, by label (at most two named);
4. otherwise the lane itself (between the thresholds; released automatically; sampled).
A blocking draft is "Held ...", an async or sampled one "Released ...".
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable

from .vocab import Finding

# Most serious first: the one a reviewer must look at before anything else.
FINDING_ORDER = (
    Finding.PII_IN_OUTPUT,
    Finding.GUARDRAIL,
    Finding.PII_RESTORED,
    Finding.UNRESOLVED_PLACEHOLDER,
    Finding.SCHEMA_INVALID,
    Finding.TRUNCATED,
    Finding.EMPTY_OUTPUT,
    Finding.LENGTH_EXCEEDED,
    Finding.QA_FAILED,
)

FINDING_WORDS = {
    Finding.PII_IN_OUTPUT: "the draft may contain personal data the request did not supply",
    Finding.GUARDRAIL: "the draft breaks one of the workflow's content rules",
    Finding.PII_RESTORED: "the draft repeats personal data written into the request",
    Finding.UNRESOLVED_PLACEHOLDER: "the draft still contains a placeholder instead of a real value",
    Finding.SCHEMA_INVALID: "the draft does not have the expected form",
    Finding.TRUNCATED: "the draft was cut off before it was finished",
    Finding.EMPTY_OUTPUT: "the model returned no text",
    Finding.LENGTH_EXCEEDED: "the draft is longer than the workflow allows",
    Finding.QA_FAILED: "the quality check did not pass the draft",
}

_GUARDRAIL_DETAILS = (
    ("banned terms:", "the draft uses a banned term"),
    ("blocked topics:", "the draft touches a blocked topic"),
    ("follows an instruction", "the draft may follow an instruction written into the request"),
    ("its own approval", "the draft talks about its own approval or confidence"),
)
_SCHEMA_FIELD_RE = re.compile(r"^(?!not JSON)([^:]+): ")
_REQUIRED_RE = re.compile(r"'([^']+)' is a required property")


def label_of(key: str, labels: dict[str, str] | None = None) -> str:
    """A field path as a reader says it: ``refund_amount`` -> "refund amount", ``risks[0]`` ->
    "risks"; a label the workflow gives (schema ``title``) wins."""
    if labels and key in labels:
        return labels[key]
    top = re.split(r"[.\[/]", str(key), maxsplit=1)[0] or str(key)
    if labels and top in labels:
        return labels[top]
    return top.replace("_", " ").strip().lower()


def _names(keys: list[str], labels: dict[str, str] | None) -> str:
    names = list(dict.fromkeys(label_of(k, labels) for k in keys))
    if len(names) > 2:
        return f"the {names[0]}, the {names[1]} and {len(names) - 2} more"
    return " and ".join(f"the {n}" for n in names)


def _finding_words(code: str, details: dict[str, Any], labels: dict[str, str] | None) -> str:
    detail = str(details.get(code) or "")
    if code == Finding.GUARDRAIL:
        for marker, words in _GUARDRAIL_DETAILS:
            if marker in detail:
                return words
    if code == Finding.SCHEMA_INVALID:
        required = _REQUIRED_RE.search(detail)
        where = _SCHEMA_FIELD_RE.match(detail)
        if required:
            return f"the draft is missing the {label_of(required.group(1), labels)}"
        if where and where.group(1) != "(root)":
            return f"the {label_of(where.group(1).replace('/', '.'), labels)} does not have the expected form"
    return FINDING_WORDS.get(code, f"a check found a problem ({code})")


_COMPARISON_WORDS = {"gte": "{} or more", "gt": "over {}", "lte": "{} or less", "lt": "under {}"}


def _rule_in_words(rule: dict) -> str:
    """``{field: severity, equals: high}`` -> "severity high"; ``{field: years_trading, lte: 1}``
    -> "years trading 1 or less"; ``in`` -> "sector retail or hospitality"."""
    name = label_of(str(rule.get("field", "")))
    for key, words in _COMPARISON_WORDS.items():
        if key in rule:
            return f"{name} {words.format(rule[key])}"
    if "in" in rule and isinstance(rule["in"], list):
        return f"{name} {' or '.join(str(v) for v in rule['in'])}"
    value = rule.get("equals")
    if isinstance(value, bool):
        return f"{name} {'yes' if value else 'no'}"
    return f"{name} {value}"


def _rules_in_words(rules: list[dict]) -> str:
    words = list(dict.fromkeys(_rule_in_words(r) for r in rules))
    # Each rule holds on its own: "with severity high, or with years trading 1 or less".
    return ", or with ".join(words)


def lane_sentence(*, lane: str, findings: Iterable[str] = (), components: dict | None = None,
                  sampled: bool = False, labels: dict[str, str] | None = None, score: float | None = None) -> str:
    """One sentence: why a draft went to ``lane`` (a ``models.Lane`` value).

    ``components`` is ``Draft.score_components`` (routing_reason, low_fields,
    validator_details, certainty); ``labels`` maps field names to what the reader calls them.
    """
    components = components if isinstance(components, dict) else {}
    reason = str(components.get("routing_reason") or "")
    details = components.get("validator_details") if isinstance(components.get("validator_details"), dict) else {}
    low = [k for k in (components.get("low_fields") or []) if isinstance(k, str)]
    held = lane == "blocking_review"
    if held and reason.startswith("automation held"):
        why = reason.split(":", 1)[1].strip() if ":" in reason else ""
        return "Held because automated release is paused for this workflow" + (f" ({why})." if why else ".")
    codes = [str(f) for f in findings]
    ordered = [c for c in FINDING_ORDER if c in codes] + sorted(c for c in codes if c not in FINDING_ORDER)
    rules = [r for r in (components.get("hold_rules") or []) if isinstance(r, dict)]
    if held and rules:
        sentence = f"Held because the workflow holds every request with {_rules_in_words(rules)}"
        if not ordered:
            return sentence + "."
        # The rule decided the lane; a finding is still what the reviewer must check first.
        more = len(ordered) - 1
        tail = f" (and {more} other check{'s' if more > 1 else ''})" if more else ""
        return f"{sentence}; also, {_finding_words(ordered[0], details, labels)}{tail}."
    if ordered:
        words = _finding_words(ordered[0], details, labels)
        more = len(ordered) - 1
        tail = f" (and {more} other check{'s' if more > 1 else ''})" if more else ""
        if held:
            return f"Held because {words}{tail}."
        return f"Released, but a reviewer checks it because {words}{tail}."
    if lane == "auto_approve" or (sampled and lane != "blocking_review"):
        if sampled:
            return "Released, sampled for a quality check."
        return "Released automatically: the model was sure and every check passed."
    if held and isinstance(score, float) and not math.isfinite(score):
        return "Held because the draft's confidence could not be measured."
    if low:
        if held:
            return f"Held because the model was unsure about {_names(low, labels)}."
        return f"Released, but a reviewer checks it because the model was not fully sure about {_names(low, labels)}."
    if held:
        return "Held because the model was unsure of its answer."
    return "Released, but a reviewer checks it because the model was fairly, not fully, sure."
