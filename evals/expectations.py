"""What a case expects of a draft, and the check of one outcome against it. Pure.

A case's expectations (JSON, one object per case in a dataset's JSON Lines):

    {"fields": {"tone": {"equals": "apologetic"},
                "reply": {"contains": "refund", "regex": "^Dear "},
                "amount": {"range": [0, 500]},
                "recommendation": {"enum": ["approve", "refer"]}},
     "schema_valid": true,                  # default: the output must match the schema
     "lane": "blocking_review",             # or
     "must_not_auto_approve": true,         # the case a reviewer rejected: never let it skip a human
     "max_cost_usd": 0.01}

Every key is optional; a case with none still checks schema validity. Refusals name the key,
as the workflow definitions do (`fields.amount.range: ...`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

LANES = ("auto_approve", "async_review", "blocking_review")


class CaseError(ValueError):
    """A case or its expectations cannot be used; `errors` is [(key, reason)]."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {r}" if k else r for k, r in errors))


class FieldExpectation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    equals: Any = None
    contains: str | None = None
    regex: str | None = None
    range: tuple[float, float] | None = None
    enum: list[Any] | None = Field(default=None, min_length=1)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value):
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @field_validator("range")
    @classmethod
    def _ordered(cls, value):
        if value is not None and value[0] > value[1]:
            raise ValueError(f"the low end {value[0]} is above the high end {value[1]}")
        return value

    @model_validator(mode="after")
    def _something(self):
        if not self.model_fields_set:
            raise ValueError("say what the field must be: equals, contains, regex, range or enum")
        return self


class Expectations(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: dict[str, FieldExpectation] = Field(default_factory=dict)
    schema_valid: bool = True
    lane: Literal["auto_approve", "async_review", "blocking_review"] | None = None
    must_not_auto_approve: bool = False
    max_cost_usd: float | None = Field(default=None, ge=0)
    # Graded by a judge model (the workflow's QA model, else its model); counted in the pass
    # rate only once the judge's agreement with reviewers is shown (evals/judge.py).
    rubric: str | None = Field(default=None, min_length=1, max_length=4000)


def parse_expectations(raw: Any) -> Expectations:
    try:
        return Expectations.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise CaseError([(".".join(str(p) for p in e["loc"]), e["msg"].removeprefix("Value error, "))
                         for e in exc.errors()]) from None


@dataclass(frozen=True)
class Outcome:
    """What the pipeline made of one case, in the terms expectations speak."""
    content: str
    parsed: Any
    schema_valid: bool
    lane: str
    score: float
    findings: tuple[str, ...]
    cost_usd: Decimal
    latency_ms: int
    failure: str = ""  # no model answered: why
    judge_grade: float | None = None
    judge_note: str = ""  # the judge's problems, or why it gave no grade


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _check_field(name: str, want: FieldExpectation, outcome: Outcome) -> list[str]:
    if not isinstance(outcome.parsed, dict) or name not in outcome.parsed:
        return [f"{name}: missing from the output"]
    got = outcome.parsed[name]
    text = got if isinstance(got, str) else str(got)
    failures = []
    if "equals" in want.model_fields_set and got != want.equals:
        failures.append(f"{name}: expected {want.equals!r}, got {got!r}")
    if want.contains is not None and want.contains.casefold() not in text.casefold():
        failures.append(f"{name}: expected to contain {want.contains!r}")
    if want.regex is not None and not re.search(want.regex, text):
        failures.append(f"{name}: expected to match /{want.regex}/")
    if want.range is not None:
        number = _number(got)
        if number is None or not want.range[0] <= number <= want.range[1]:
            failures.append(f"{name}: expected a number in [{want.range[0]:g}, {want.range[1]:g}], got {got!r}")
    if want.enum is not None and got not in want.enum:
        failures.append(f"{name}: expected one of {want.enum!r}, got {got!r}")
    return failures


JUDGE_PASS = 0.5


def judge_failures(expect: Expectations, outcome: Outcome) -> list[str]:
    """What the judge held against the draft (kept apart: it gates only once trusted)."""
    if not expect.rubric or outcome.failure:
        return []
    if outcome.judge_grade is None:
        return [f"judge: no grade ({outcome.judge_note or 'not asked'})"]
    if outcome.judge_grade < JUDGE_PASS:
        return [f"judge: grade {outcome.judge_grade:.2f} < {JUDGE_PASS:.2f}" + (f": {outcome.judge_note}" if outcome.judge_note else "")]
    return []


def check(expect: Expectations, outcome: Outcome) -> list[str]:
    """Why the outcome fails its case (the judge's rubric aside); empty when it passes."""
    if outcome.failure:
        return [f"no draft: {outcome.failure}"]
    failures = []
    if expect.schema_valid and not outcome.schema_valid:
        failures.append("output does not match the workflow's schema")
    for name, want in expect.fields.items():
        failures.extend(_check_field(name, want, outcome))
    if expect.lane is not None and outcome.lane != expect.lane:
        failures.append(f"lane: expected {expect.lane}, got {outcome.lane}")
    if expect.must_not_auto_approve and outcome.lane == "auto_approve":
        failures.append("auto-approved a case that must not be")
    if expect.max_cost_usd is not None and outcome.cost_usd > Decimal(str(expect.max_cost_usd)):
        failures.append(f"cost ${outcome.cost_usd} over the ceiling ${expect.max_cost_usd}")
    return failures
