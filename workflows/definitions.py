"""The workflow definition format (DESIGN.md section 3): schema, validation and loading.

pydantic gives us typed, nested validation with the location of every error, which we turn
into messages that name the offending key (``form.steps[1].fields[0].type: ...``).
"""
from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import jsonschema
import yaml
from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .vocab import Finding

FIELD_TYPES = ("text", "textarea", "choice", "multichoice", "integer", "decimal", "date", "boolean", "email")
FINDING_CODES = tuple(Finding)
PLACEHOLDER_RE = re.compile(r"{{\s*([A-Za-z_][A-Za-z0-9_]*)\s*}}")
# Anything in double braces: what an author meant as a placeholder, even if misspelt.
BRACES_RE = re.compile(r"{{.*?}}", re.DOTALL)
SLUG_RE = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
NAME_RE = r"^[a-z_][a-z0-9_]*$"
RESERVED_NAMES = ("feedback",)
# Six months: the EU AI Act's minimum for deployers' logs (Art. 19, 26(6)); also the default.
RETENTION_FLOOR_DAYS = 183


class DefinitionError(ValueError):
    """A definition that does not validate. ``errors`` lists ``(key, reason)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{key}: {reason}" for key, reason in errors))


class _KeyedError(ValueError):
    """A refusal raised by a model-level validator that belongs to one key inside the model.

    pydantic locates a model validator's error at the model itself (``routing``, or the root);
    the author needs the key to fix (``routing.block_below``), so the validator names it here
    and ``parse_definition`` appends it to pydantic's location.
    """

    def __init__(self, loc: tuple, message: str):
        self.loc = loc
        super().__init__(message)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldDef(_Strict):
    name: str = Field(pattern=NAME_RE)
    type: Literal[FIELD_TYPES]  # type: ignore[valid-type]
    label: str = Field(min_length=1)
    required: bool = False
    help: str = ""
    max_length: int | None = Field(default=None, gt=0)
    min: Decimal | None = None
    max: Decimal | None = None
    choices: list[str] | None = None
    pii: bool = False

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        # Prompts render {{ feedback }} from the reviewer's feedback; a field of that name
        # would be silently overwritten by it.
        if name in RESERVED_NAMES:
            raise ValueError(f"'{name}' is reserved for the reviewer's feedback in prompts; rename the field")
        return name

    @model_validator(mode="after")
    def _choices_match_type(self):
        if self.type in ("choice", "multichoice"):
            if not self.choices:
                raise ValueError(f"a {self.type} field needs a non-empty 'choices' list")
        elif self.choices is not None:
            raise ValueError(f"'choices' is only allowed on choice and multichoice fields, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("'min' is greater than 'max'")
        return self


class StepDef(_Strict):
    title: str = Field(min_length=1)
    fields: list[FieldDef] = Field(min_length=1)


class FormDef(_Strict):
    steps: list[StepDef] = Field(min_length=1)

    def all_fields(self) -> list[FieldDef]:
        return [field for step in self.steps for field in step.fields]


class PromptDef(_Strict):
    system: str = ""
    user: str = Field(min_length=1)


class OutputDef(_Strict):
    format: Literal["json", "text"] = "text"
    # The JSON Schema of the draft; `schema` shadows a BaseModel attribute, hence the alias.
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    max_chars: int | None = Field(default=None, gt=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _schema_for_json(self):
        if self.format == "json":
            if not self.json_schema:
                raise _KeyedError(("schema",), "format json needs a 'schema'")
            try:
                jsonschema.Draft202012Validator.check_schema(self.json_schema)
            except jsonschema.SchemaError as exc:
                raise _KeyedError(("schema",), f"not a valid JSON Schema: {exc.message}") from None
        return self


class ModelDef(_Strict):
    name: str | None = None
    fallback: list[str] = []
    # Cascade: a draft scoring under routing.block_below (or failing QA) is re-drafted once
    # with this model before a human sees it.
    escalate_to: str | None = None
    temperature: float = Field(default=0.2, ge=0, le=2)
    max_tokens: int = Field(default=800, gt=0, le=32000)
    # Per-workflow overrides of REVIEWDESK_LLM_TIMEOUT / REVIEWDESK_LLM_CONNECT_TIMEOUT.
    timeout_seconds: float | None = Field(default=None, gt=0, le=600)
    connect_timeout_seconds: float | None = Field(default=None, gt=0, le=60)
    # Where certainty comes from when the provider returns no token logprobs: a second sample
    # compared with the first ("agreement"), the QA grade ("qa", needs a qa section), or
    # nothing ("none": such drafts are never auto-approved).
    certainty_without_logprobs: Literal["agreement", "qa", "none"] = "agreement"

    @model_validator(mode="after")
    def _bounded_chain(self):
        chain = [self.name, *self.fallback, *([self.escalate_to] if self.escalate_to else [])]
        limit = getattr(settings, "REVIEWDESK_LLM_MAX_MODELS", 3)
        if len(chain) > limit:
            # Every model tried costs its timeout and retries; the task's time limit is sized
            # for at most this many (settings refuse a combination that cannot fit).
            raise _KeyedError(("fallback",), f"{len(chain)} models (name, fallback, escalate_to) exceed the limit of {limit}")
        if self.timeout_seconds is not None:
            retries = getattr(settings, "REVIEWDESK_LLM_MAX_RETRIES", 2)
            per_model = self.timeout_seconds * (retries + 1) + retries * getattr(settings, "REVIEWDESK_LLM_RETRY_WAIT_CAP", 3)
            task_limit = getattr(settings, "CELERY_TASK_SOFT_TIME_LIMIT", 295)
            if per_model * len(chain) >= task_limit:
                raise _KeyedError(
                    ("timeout_seconds",),
                    f"{self.timeout_seconds:g} s with {retries} retries for {len(chain)} models needs "
                    f"{per_model * len(chain):g} s, more than the drafting task's {task_limit} s",
                )
        return self


class QADef(_Strict):
    """A second, cheaper model grades each draft against the input and this rubric."""

    model: str = Field(min_length=1)
    rubric: str = Field(min_length=1)
    # A grade (0..1) under this is a qa_failed finding; the grade is a score component anyway.
    fail_below: float = Field(default=0.5, ge=0, le=1)


class GuardrailsDef(_Strict):
    # Whole words or phrases, any case: a draft containing one is a guardrail finding.
    banned_terms: list[Annotated[str, Field(min_length=1)]] = []
    # Topics the drafts must not touch: name -> words or phrases that signal it.
    blocked_topics: dict[str, list[Annotated[str, Field(min_length=1)]]] = {}


# Queue priorities, lowest first; stored on ReviewTask.priority as their rank (workflows/queue.py).
PRIORITIES = ("low", "normal", "high", "urgent")


class FormRuleDef(_Strict):
    """A condition on one form value: ``{field: order_value, gte: 1000}`` or ``{field:
    severity, equals: high}``. Exactly one comparison, so a rule reads as one sentence and two
    conditions are two rules. The shape and the matcher of ``routing.priority_rules`` and
    ``routing.hold_rules``."""

    field: str = Field(pattern=NAME_RE)
    gte: Decimal | None = None
    gt: Decimal | None = None
    lte: Decimal | None = None
    lt: Decimal | None = None
    equals: str | int | bool | None = None
    in_: list[str] | None = Field(default=None, alias="in")

    @model_validator(mode="after")
    def _one_comparison(self):
        given = [k for k in COMPARISONS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of gte, gt, lte, lt, equals, in")
        return self

    @property
    def comparison(self) -> tuple[str, Any]:
        """The rule's one comparison as (key as written, value): ``("in", ["a", "b"])``."""
        key = next(k for k in COMPARISONS if getattr(self, k) is not None)
        return key.rstrip("_"), getattr(self, key)

    def condition(self) -> dict[str, Any]:
        """The field and its comparison as the author wrote them (JSON-ready), for the draft's
        stored routing facts and the reviewer's sentence (workflows/explain.py)."""
        key, value = self.comparison
        plain = str(value) if isinstance(value, Decimal) else value
        return {"field": self.field, key: plain}

    def matches(self, data: dict) -> bool:
        value = (data or {}).get(self.field)
        if self.equals is not None:
            return value == self.equals or (value is not None and str(value) == str(self.equals))
        if self.in_ is not None:
            values = value if isinstance(value, list) else [value]
            return any(str(v) in self.in_ for v in values if v is not None)
        number = _number(value)
        if number is None:
            return False  # an empty or non-numeric value matches no numeric comparison
        if self.gte is not None:
            return number >= self.gte
        if self.gt is not None:
            return number > self.gt
        if self.lte is not None:
            return number <= self.lte
        return number < self.lt


COMPARISONS = ("gte", "gt", "lte", "lt", "equals", "in_")


def _number(value) -> Decimal | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


class PriorityRuleDef(FormRuleDef):
    """Raise a review's priority when a form value matches: ``{field: order_value, gte: 1000,
    priority: high}``. A rule never lowers the workflow's priority."""

    priority: Literal[PRIORITIES]  # type: ignore[valid-type]


class HoldRuleDef(FormRuleDef):
    """Hold every draft whose form value matches for blocking review, whatever its score:
    ``{field: severity, equals: high}``. What the workflow's owners decided a person must see
    before release is a rule about the request, not a confidence the model can exceed."""


class RoutingDef(_Strict):
    priority: Literal[PRIORITIES] = "normal"  # type: ignore[valid-type]
    priority_rules: list[PriorityRuleDef] = []
    # Drafts of a request matching any of these go to blocking review whatever their score
    # (routing.route); e.g. [{field: severity, equals: high}].
    hold_rules: list[HoldRuleDef] = []
    # The blocking lane needs two distinct reviewers' approvals of the same text.
    two_approvals: bool = False
    auto_approve_at: float = Field(default=0.90, ge=0, le=1)
    block_below: float = Field(default=0.60, ge=0, le=1)
    always_block_on: list[str] = ["schema_invalid", "pii_in_output", "guardrail"]
    audit_sample_rate: float = Field(default=0.05, ge=0, le=1)
    sla_minutes: dict[Literal["blocking_review", "async_review"], Annotated[int, Field(gt=0)]] = {
        "blocking_review": 30,
        "async_review": 1440,
    }
    # The second SLA limit (issue 8): an open review older than this many minutes (per lane,
    # counted like sla_minutes from when it was queued) is escalated to escalation_group, whose
    # members may then see and decide it. The two keys come together; the group is created
    # at publish time if missing, like reviewer_groups.
    escalation_group: str | None = Field(default=None, min_length=1, max_length=150)
    escalate_after_minutes: dict[Literal["blocking_review", "async_review"], Annotated[int, Field(gt=0)]] = {}

    @model_validator(mode="after")
    def _escalation(self):
        if self.escalation_group is not None and not self.escalation_group.strip():
            raise _KeyedError(("escalation_group",), "must name a group")
        if self.escalation_group and not self.escalate_after_minutes:
            raise _KeyedError(("escalate_after_minutes",), "escalation_group needs escalate_after_minutes "
                                                           "(minutes per lane before a review is escalated)")
        if self.escalate_after_minutes and not self.escalation_group:
            raise _KeyedError(("escalation_group",), "escalate_after_minutes needs an escalation_group to escalate to")
        for lane, minutes in self.escalate_after_minutes.items():
            due = self.sla_minutes.get(lane)
            if due is not None and minutes <= due:
                raise _KeyedError(("escalate_after_minutes", lane),
                                  f"{minutes} must be more than sla_minutes.{lane} ({due}): escalation is the second limit")
        return self

    @model_validator(mode="after")
    def _ordered(self):
        if self.block_below > self.auto_approve_at:
            raise _KeyedError(
                ("block_below",), f"{self.block_below} must not exceed auto_approve_at ({self.auto_approve_at})"
            )
        unknown = sorted(set(self.always_block_on) - set(FINDING_CODES))
        if unknown:
            raise _KeyedError(
                ("always_block_on",), f"unknown finding codes {unknown}; known: {list(FINDING_CODES)}"
            )
        return self


class WorkflowDefinition(_Strict):
    slug: str = Field(pattern=SLUG_RE, max_length=80)
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    reviewer_groups: list[str] = Field(min_length=1)
    form: FormDef
    prompt: PromptDef
    output: OutputDef = OutputDef()
    model: ModelDef = ModelDef()
    routing: RoutingDef = RoutingDef()
    pii: Literal["redact", "allow"] = "redact"
    cache: bool = True
    qa: QADef | None = None
    guardrails: GuardrailsDef = GuardrailsDef()
    # Days a submission's personal data is kept before the purge task erases it (legal hold
    # aside); services/retention.py acts on it.
    retention_days: int = RETENTION_FLOOR_DAYS
    # For reviewers, shown beside the draft on the review page; never sent to the model.
    # `review_rubric` is an optional list of short checks ("The refund matches the form").
    guidelines: str = Field(default="", max_length=4000)
    review_rubric: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(default=[], max_length=20)

    @field_validator("retention_days")
    @classmethod
    def _retention_floor(cls, days: int) -> int:
        if days < RETENTION_FLOOR_DAYS:
            raise ValueError(
                f"must be at least {RETENTION_FLOOR_DAYS} days (six months, the minimum log retention for deployers)"
            )
        return days

    @field_validator("reviewer_groups")
    @classmethod
    def _group_names(cls, groups: list[str]) -> list[str]:
        if any(not g.strip() for g in groups):
            raise ValueError("group names must not be empty")
        return groups

    @model_validator(mode="after")
    def _fields_and_placeholders(self):
        names: set[str] = set()
        for s, step in enumerate(self.form.steps):
            for f, field in enumerate(step.fields):
                if field.name in names:
                    raise _KeyedError(
                        ("form", "steps", s, "fields", f, "name"),
                        f"'{field.name}' is already the name of another field; field names must be unique",
                    )
                names.add(field.name)
        for part in ("system", "user"):
            for braces in BRACES_RE.findall(getattr(self.prompt, part)):
                # {{ customer.name }} or {{ name|upper }} would reach the model verbatim.
                if not PLACEHOLDER_RE.fullmatch(braces):
                    raise _KeyedError(("prompt", part), f"{braces} is not a placeholder; write {{{{ field_name }}}}")
            for placeholder in PLACEHOLDER_RE.findall(getattr(self.prompt, part)):
                if placeholder not in names and placeholder not in RESERVED_NAMES:
                    raise _KeyedError(("prompt", part), f"{{{{ {placeholder} }}}} names no form field")
        return self

    @model_validator(mode="after")
    def _rule_fields(self):
        fields = {f.name: f for step in self.form.steps for f in step.fields}
        for key in ("priority_rules", "hold_rules"):
            for r, rule in enumerate(getattr(self.routing, key)):
                if rule.field not in fields:
                    raise _KeyedError(("routing", key, r, "field"), f"'{rule.field}' names no form field")
        # A hold rule that can never match holds nothing, silently: refuse it. (Priority rules
        # keep their older, looser check: published definitions are parsed again on every read.)
        for r, rule in enumerate(self.routing.hold_rules):
            if problem := _never_matches(rule, fields[rule.field]):
                raise _KeyedError(("routing", "hold_rules", r, rule.comparison[0]), problem)
        return self

    @model_validator(mode="after")
    def _qa_for_qa_certainty(self):
        if self.model.certainty_without_logprobs == "qa" and self.qa is None:
            raise _KeyedError(("model", "certainty_without_logprobs"), "'qa' needs a qa section (model and rubric)")
        return self

    def as_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", by_alias=True)
        # Keys added later are left out while unused, so a definition that does not use them
        # keeps the hash (and the model-answer cache key) it had before they existed.
        for key in ("guidelines", "review_rubric"):
            if not data.get(key):
                data.pop(key, None)
        if not data["routing"].get("hold_rules"):
            data["routing"].pop("hold_rules", None)
        return data


def _never_matches(rule: FormRuleDef, field: FieldDef) -> str:
    """Why ``rule`` can never match a value of ``field`` (a misspelt choice, a number compared
    with a choice), or "" when it can."""
    key, value = rule.comparison
    if key in ("gte", "gt", "lte", "lt"):
        if field.type not in ("integer", "decimal"):
            return f"compares a number, but '{field.name}' is a {field.type} field"
        return ""
    wanted = value if key == "in" else [value]
    if field.choices is not None:
        unknown = [str(v) for v in wanted if str(v) not in field.choices]
        if unknown:
            return f"{unknown} not among the choices of '{field.name}': {field.choices}"
    if field.type == "boolean" and not all(isinstance(v, bool) for v in wanted):
        return f"'{field.name}' is a yes/no field: write true or false"
    return ""


def _key_of(loc: tuple) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif isinstance(part, str) and part.startswith("function-"):
            continue  # pydantic's validator frames are not keys of the document
        else:
            key += f".{part}" if key else str(part)
    return key or "(definition)"


def parse_definition(data: Any) -> WorkflowDefinition:
    if not isinstance(data, dict):
        raise DefinitionError([("(definition)", "must be a mapping of keys to values")])
    try:
        return WorkflowDefinition.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            cause = err.get("ctx", {}).get("error")
            loc = (*err["loc"], *cause.loc) if isinstance(cause, _KeyedError) else err["loc"]
            errors.append((_key_of(loc), message))
        raise DefinitionError(errors) from None


def parse_yaml(text: str) -> WorkflowDefinition:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(yaml)"
        raise DefinitionError([(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    return parse_definition(data)


def definition_hash(definition: dict[str, Any]) -> str:
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
