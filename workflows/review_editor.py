"""The review page's structured editor: a JSON draft as labelled form fields, and back.

``build_editor`` turns the workflow's output schema and the draft's value into a tree of
``Node`` (what the template renders); ``assemble`` reads the posted form back into a JSON
value walking the same (schema, draft) pair, so the two always agree on the fields. Plain
form fields named by path ("out/reply", "out/risks/0") make it work without JavaScript.

The mapping: enum -> select; string -> text input, or a textarea for long or multi-line text;
number/integer -> number input; boolean -> checkbox; object -> fieldset of its properties;
array -> fieldset with one field per item (each removable, plus an empty slot to add one
when items are scalars); anything else (anyOf, a value that does not fit its schema, a key
the schema does not describe with a type) -> a small JSON text box for that value alone.

The round trip is exact: a form posted unchanged assembles to the draft's value (an approval
without changes is not an edit), because every rule that could lose information keeps the
draft's value instead: a field missing from the post is the draft's value, an empty field
for a key the draft did not have adds nothing, a value that does not fit its field's kind is
edited as JSON rather than coerced.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from .definitions import WorkflowDefinition
from .pipeline.confidence import LOW_CERTAINTY, field_path

PREFIX = "out"
REMOVE = "remove:"
MARKER = "editor"  # posted with value "fields": the approval comes from this editor
_OMIT = object()  # an absent key stays absent
_LONG_TEXT = 40  # characters: a longer (or multi-line) string gets a textarea, unless maxLength is short
_INT_RE = re.compile(r"^[+-]?\d+$")


@dataclass
class Node:
    kind: str  # text | textarea | select | number | checkbox | object | list | json
    path: tuple
    name: str
    id: str
    label: str
    value: str = ""
    checked: bool = False
    choices: list[tuple[str, str]] = field(default_factory=list)
    children: list["Node"] = field(default_factory=list)
    required: bool = False
    step: str = "any"
    help: str = ""
    certainty: float | None = None
    low: bool = False
    unsure: list[str] = field(default_factory=list)  # the words the model was least sure of
    findings: list[str] = field(default_factory=list)  # validator findings about this field
    errors: list[str] = field(default_factory=list)
    remove_name: str = ""  # a list item: the checkbox that drops it
    removed: bool = False
    is_slot: bool = False  # the empty "add an item" field of a list

    @property
    def is_group(self) -> bool:
        return self.kind in ("object", "list")

    @property
    def key(self) -> str:
        return field_path(self.path) if self.path else ""

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(frozen=True)
class Problem:
    """Why a final output does not match the workflow's output definition, for one field."""

    path: tuple
    message: str

    @property
    def text(self) -> str:
        # The label the editor shows and the key as written, so either reader finds the field.
        return f"{field_label(self.path)} ({field_path(self.path)}): {self.message}" if self.path else self.message


def name_of(path: tuple) -> str:
    # JSON Pointer escaping, so any key (with "/" or "~" in it) has one unambiguous name.
    return PREFIX + "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def field_label(path: tuple, schema: dict | None = None) -> str:
    """"risks[1]" -> "Risks item 2", "address.city" -> "Address › City"; a schema title wins."""
    parts = []
    node = schema
    for step in path:
        if isinstance(step, int):
            parts.append(f"item {step + 1}")
            node = node.get("items") if isinstance(node, dict) else None
            continue
        node = node.get("properties", {}).get(step) if isinstance(node, dict) else None
        title = node.get("title") if isinstance(node, dict) else None
        parts.append(title or str(step).replace("_", " ").strip().capitalize())
    text = ""
    for part in parts:
        text += (" " if part.startswith("item ") else (" › " if text else "")) + part
    return text or "Output"


# --- schema helpers ---------------------------------------------------------------------------


def _resolve(schema: Any, root: dict) -> dict:
    """Follow a local "$ref" (#/...); anything unreadable is an empty (unknown) schema."""
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/") and seen < 10:
        target: Any = root
        for part in schema["$ref"][2:].split("/"):
            target = target.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(target, dict) else None
        schema, seen = target, seen + 1
    return schema if isinstance(schema, dict) else {}


def _type_of(schema: dict, value: Any, present: bool) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    if kind is None and present:
        kind = {str: "string", bool: "boolean", int: "integer", float: "number", dict: "object", list: "array"}.get(type(value))
        if kind is None and value is None:
            return None
    if kind is None and "properties" in schema:
        kind = "object"
    return kind


def _fits(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    return False


def _enum_choices(schema: dict) -> tuple[list[Any], bool] | None:
    enum = schema.get("enum")
    if not isinstance(enum, list) or not enum:
        return None
    return enum, all(isinstance(e, str) for e in enum)


def _enum_value(value: Any, plain: bool) -> str:
    return value if plain and isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _kind(schema: dict, value: Any, present: bool) -> str:
    """The form field for one value: see the module docstring."""
    if "anyOf" in schema or "oneOf" in schema:
        return "json"
    enum = _enum_choices(schema)
    if enum is not None:
        values, plain = enum
        if not present or value is None or value in values or (plain and isinstance(value, str)):
            return "select"
        return "json"
    kind = _type_of(schema, value, present)
    simple = {"string": "text", "number": "number", "integer": "number", "boolean": "checkbox",
              "object": "object", "array": "list"}
    if kind not in simple:
        return "json"
    if present and not _fits(kind, value):
        # Null included: a checkbox or number field cannot give null back.
        return "json"
    return simple[kind]


def _number_text(value: Any) -> str:
    return "" if value is None else (str(value) if isinstance(value, int) else repr(float(value)))


# --- draft -> editor ------------------------------------------------------------------------


class _Ids:
    def __init__(self):
        self.used: set[str] = set()

    def __call__(self, path: tuple) -> str:
        base = "ed-" + ("-".join(re.sub(r"[^A-Za-z0-9_]", "_", str(p)) for p in path) or "root")
        candidate, n = base, 2
        while candidate in self.used:
            candidate, n = f"{base}-{n}", n + 1
        self.used.add(candidate)
        return candidate


def original_value(content: str) -> Any:
    """The draft's JSON value in the order it was written (jsonb reorders keys), or raise ValueError."""
    return json.loads(content)


def build_editor(spec: WorkflowDefinition, value: Any, *, components: dict | None = None,
                 findings: dict[str, list[str]] | None = None, data=None,
                 problems: list[Problem] = (), errors: dict[str, str] | None = None) -> Node:
    """The editor tree for a JSON draft ``value``.

    ``data``: a posted form to show instead of the draft's values (after a refusal or a
    preview, so nothing typed is lost); ``findings`` maps a field path (``field_path``) to the
    validator findings about it; ``problems`` and ``errors`` mark fields the last post got wrong.
    """
    from .templatetags.reviewdesk import _segments

    root_schema = spec.output.json_schema or {}
    components = components if isinstance(components, dict) else {}
    fields = components.get("fields") if isinstance(components.get("fields"), dict) else {}
    values = components.get("values") if isinstance(components.get("values"), dict) else {}
    spans = components.get("field_spans") if isinstance(components.get("field_spans"), dict) else {}
    low_fields = set(components.get("low_fields") or ())
    findings = findings or {}
    errors = errors or {}
    by_path: dict[tuple, list[str]] = {}
    for problem in problems:
        by_path.setdefault(tuple(problem.path), []).append(problem.message)
    ids = _Ids()

    def posted(name: str) -> str | None:
        return data.get(name) if data is not None else None

    def node(schema: Any, val: Any, present: bool, path: tuple, required: bool, label: str | None = None) -> Node:
        schema = _resolve(schema, root_schema)
        kind = _kind(schema, val, present)
        key = field_path(path) if path else ""
        certainty = values.get(key, fields.get(key)) if key else None
        certainty = certainty if isinstance(certainty, (int, float)) and not isinstance(certainty, bool) else None
        n = Node(
            kind=kind, path=path, name=name_of(path), id=ids(path), label=label or field_label(path, root_schema),
            required=required, help=str(schema.get("description") or ""), certainty=certainty,
            low=(certainty is not None and certainty < LOW_CERTAINTY) or key in low_fields,
            findings=list(findings.get(key, ())), errors=[*by_path.get(path, ()), *([errors[n_] for n_ in [name_of(path)] if n_ in errors])],
        )
        if kind == "object":
            current = val if present and isinstance(val, dict) else {}
            props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
            needed = set(schema.get("required") or ())
            extra = schema.get("additionalProperties")
            for k in [*current.keys(), *[p for p in props if p not in current]]:
                child_schema = props.get(k, extra if isinstance(extra, dict) else {})
                n.children.append(node(child_schema, current.get(k), k in current, (*path, k), k in needed))
            return n
        if kind == "list":
            current = val if present and isinstance(val, list) else []
            items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
            base = field_label(path, root_schema)
            for i, item in enumerate(current):
                child = node(items, item, True, (*path, i), False, f"{base} item {i + 1}")
                child.remove_name = REMOVE + child.name
                child.removed = data is not None and bool(data.get(child.remove_name))
                n.children.append(child)
            if _kind(_resolve(items, root_schema), None, False) in ("text", "number", "select"):
                slot = node(items, None, False, (*path, len(current)), False, f"{base}: add an item")
                slot.is_slot = True
                n.children.append(slot)
            return n
        text = posted(n.name)
        if kind == "checkbox":
            n.checked = ("true" in data.getlist(n.name)) if data is not None and n.name in data else (present and val is True)
            return n
        if kind == "select":
            enum, plain = _enum_choices(schema)
            options = [(_enum_value(e, plain), str(e)) for e in enum]
            if present and val is not None and val not in enum:
                options.insert(0, (_enum_value(val, plain), f"{val} (not an allowed value)"))
            if not required or not present:
                options.insert(0, ("", "— none —"))
            n.choices = options
            n.value = text if text is not None else (_enum_value(val, plain) if present and val is not None else "")
            return n
        if kind == "number":
            n.step = "1" if _type_of(schema, val, present) == "integer" else "any"
            n.value = text if text is not None else (_number_text(val) if present else "")
            return n
        if kind == "json":
            n.value = text if text is not None else (json.dumps(val, ensure_ascii=False, indent=2) if present else "")
            return n
        # A string.
        n.value = text if text is not None else (val if present else "")
        limit = schema.get("maxLength")
        short = isinstance(limit, int) and limit <= 120
        # Decided on the draft's value, so a field keeps its kind when the page comes back.
        basis = val if present and isinstance(val, str) else n.value
        if "\n" in n.value or "\n" in basis or (not short and (len(basis) > _LONG_TEXT or (isinstance(limit, int) and limit > 200))):
            n.kind = "textarea"  # a newline cannot be typed in (nor kept by) a text input
        if present and isinstance(val, str):
            n.unsure = [s["text"].strip() for s in _segments(val, spans.get(key)) if s.get("low") and s["text"].strip()]
        return n

    return node(root_schema, value, True, (), True, "Output")


# --- editor -> JSON --------------------------------------------------------------------------


def assemble(spec: WorkflowDefinition, original: Any, data) -> tuple[Any, dict[str, str]]:
    """The JSON value of a posted editor form, and {field name: error} for what could not be read.

    Walks the same (schema, draft) pair as ``build_editor``: see the module docstring for the
    rules that make an unchanged form give back the draft's value.
    """
    root_schema = spec.output.json_schema or {}
    errors: dict[str, str] = {}

    def read(schema: Any, val: Any, present: bool, path: tuple, required: bool) -> Any:
        schema = _resolve(schema, root_schema)
        kind = _kind(schema, val, present)
        name = name_of(path)
        if kind == "object":
            current = val if present and isinstance(val, dict) else {}
            props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
            needed = set(schema.get("required") or ())
            extra = schema.get("additionalProperties")
            out = {}
            for k in [*current.keys(), *[p for p in props if p not in current]]:
                child_schema = props.get(k, extra if isinstance(extra, dict) else {})
                got = read(child_schema, current.get(k), k in current, (*path, k), k in needed)
                if got is not _OMIT:
                    out[k] = got
            return out if (present or out) else _OMIT
        if kind == "list":
            current = val if present and isinstance(val, list) else []
            items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
            out = []
            for i, item in enumerate(current):
                if data.get(REMOVE + name_of((*path, i))):
                    continue
                got = read(items, item, True, (*path, i), False)
                out.append(item if got is _OMIT else got)
            if _kind(_resolve(items, root_schema), None, False) in ("text", "number", "select"):
                got = read(items, None, False, (*path, len(current)), False)
                if got is not _OMIT:
                    out.append(got)
            return out if (present or out) else _OMIT
        if name not in data:
            return val if present else _OMIT  # not posted: the draft's value stands
        if kind == "checkbox":
            checked = "true" in data.getlist(name)
            return checked if (present or checked) else _OMIT
        text = data.get(name, "").replace("\r\n", "\n")
        if kind == "text":
            return text if (present or text) else _OMIT
        if text.strip() == "":
            if not present:
                return _OMIT
            if val is None and kind in ("select", "json"):
                return None
            if not required and kind != "json":
                return _OMIT  # an optional value the reviewer cleared
            errors[name] = "Enter a value; this field is required." if kind != "json" else "Enter a JSON value."
            return val
        if kind == "select":
            enum, plain = _enum_choices(schema)
            if plain:
                return text
            try:
                return json.loads(text)
            except ValueError:
                errors[name] = "Choose one of the listed values."
                return val
        if kind == "number":
            try:
                if _INT_RE.match(text.strip()):
                    return int(text.strip())
                number = float(text.strip())
                if not math.isfinite(number):
                    raise ValueError
                if _type_of(schema, val, present) == "integer":
                    errors[name] = "Enter a whole number."
                    return val
                return number
            except (ValueError, OverflowError):
                errors[name] = "Enter a number."
                return val
        try:  # json
            return json.loads(text)
        except (ValueError, RecursionError) as exc:
            errors[name] = f"Not valid JSON: {getattr(exc, 'msg', exc)}."
            return val

    value = read(root_schema, original, True, (), True)
    return value, errors


def dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# --- re-validation ----------------------------------------------------------------------------


def output_problems(spec: WorkflowDefinition, text: str) -> list[Problem]:
    """Everything that keeps ``text`` from being a valid output of this workflow, per field.

    The same checks as the pipeline's validator (empty, longer than output.max_chars, not JSON,
    not matching the schema), but every schema error (not only the best match) and each one
    located at its field: a missing required property is reported at the property.
    """
    problems: list[Problem] = []
    if not text.strip():
        return [Problem((), "The output is empty.")]
    if spec.output.max_chars and len(text) > spec.output.max_chars:
        problems.append(Problem((), f"The output has {len(text)} characters; the workflow allows {spec.output.max_chars}."))
    if spec.output.format != "json":
        return problems
    from .pipeline.validators import validate_output

    validation = validate_output(spec, text)
    if validation.parsed is None:
        detail = validation.details.get("schema_invalid") or validation.details.get("empty_output") or "not JSON"
        return [*problems, Problem((), f"The output is {detail}.")]
    validator = jsonschema.Draft202012Validator(spec.output.json_schema)
    for error in sorted(validator.iter_errors(validation.parsed), key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(error.absolute_path)
        message = error.message
        if error.validator == "required":
            missing = re.match(r"'(.+)' is a required property", error.message)
            if missing:
                path, message = (*path, missing.group(1)), "required, but missing."
        problems.append(Problem(path, message))
    return problems


def finding_paths(spec: WorkflowDefinition, value: Any, details: dict) -> dict[str, list[str]]:
    """Validator findings placed at the fields they concern: a schema error at its path, a
    banned term or blocked topic at each text field containing it. {field path: [finding]}."""
    out: dict[str, list[str]] = {}
    if not isinstance(details, dict):
        return out
    schema_detail = str(details.get("schema_invalid") or "")
    where = re.match(r"^(?!not JSON)([^:]+): (.*)$", schema_detail)
    if where and where.group(1) != "(root)":
        parts = tuple(int(p) if p.isdigit() else p for p in where.group(1).split("/"))
        out.setdefault(field_path(parts), []).append(f"Does not match the schema: {where.group(2)}")
    guard = str(details.get("guardrail") or "")
    terms = []
    for part in guard.split(";"):
        part = part.strip()
        if part.startswith("banned terms:"):
            terms += [t.strip() for t in part.removeprefix("banned terms:").split(",") if t.strip()]
    words = [w for words in spec.guardrails.blocked_topics.values() for w in words] if "blocked topics:" in guard else []

    def visit(val, path):
        if isinstance(val, dict):
            for k, v in val.items():
                visit(v, (*path, k))
        elif isinstance(val, list):
            for i, v in enumerate(val):
                visit(v, (*path, i))
        elif isinstance(val, str):
            for term in terms:
                if re.search(r"(?<!\w)" + re.escape(term) + r"(?!\w)", val, re.IGNORECASE):
                    out.setdefault(field_path(path), []).append(f"Uses the banned term “{term}”.")
            for w in words:
                if re.search(r"(?<!\w)" + re.escape(w) + r"(?!\w)", val, re.IGNORECASE):
                    out.setdefault(field_path(path), []).append(f"Touches a blocked topic (“{w}”).")

    if terms or words:
        visit(value, ())
    return out
