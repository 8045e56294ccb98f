"""The structured editor (workflows/review_editor.py): schema -> fields, fields -> JSON, the
round trip (an unchanged form is the draft's value exactly), and re-validation per field."""
from __future__ import annotations

import json

import pytest
from django.http import QueryDict

from workflows.definitions import parse_definition
from workflows.review_editor import REMOVE, assemble, build_editor, dump, finding_paths, name_of, output_problems

RICH_SCHEMA = {
    "type": "object",
    "required": ["title", "amount", "tone"],
    "properties": {
        "title": {"type": "string", "title": "Headline"},
        "body": {"type": "string", "description": "The whole letter."},
        "tone": {"type": "string", "enum": ["apologetic", "neutral"]},
        "amount": {"type": "number"},
        "count": {"type": "integer"},
        "urgent": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}}},
        "lines": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}}},
        "either": {"anyOf": [{"type": "string"}, {"type": "number"}]},
        "level": {"enum": [1, 2, 3]},
        "maybe": {"type": ["string", "null"]},
    },
}
RICH_VALUE = {
    "title": "Sorry about the parcel",
    "body": "Dear Ann,\nwe are sorry the parcel arrived broken.\r\nA replacement ships today. ~/odd",
    "tone": "apologetic",
    "amount": 42.5,
    "count": 3,
    "urgent": False,
    "tags": ["refund", "", "parcel"],
    "address": {"city": "Lyon", "zip": "69001"},
    "lines": [{"sku": "A-1", "qty": 2}, {"sku": "B/2", "qty": 1}],
    "either": 7,
    "level": 2,
    "maybe": None,
    "extra key/with~odd": {"x": [1, 2.0, True, None]},
}


def _spec(schema, **output):
    data = {
        "slug": "rich", "name": "Rich", "reviewer_groups": ["g"],
        "form": {"steps": [{"title": "S", "fields": [{"name": "text", "type": "text", "label": "Text"}]}]},
        "prompt": {"user": "{{ text }}"},
        "output": {"format": "json", "schema": schema, **output},
    }
    return parse_definition(data)


def _as_posted(root, changes=None) -> QueryDict:
    """What a browser posts for the editor as rendered, with ``changes`` (name -> value) typed in."""
    changes = changes or {}
    posted = QueryDict(mutable=True)
    for node in root.walk():
        if node.is_group:
            continue
        value = changes.get(node.name, node.value)
        if node.kind == "checkbox":
            posted.appendlist(node.name, "")
            if changes.get(node.name, node.checked) is True:
                posted.appendlist(node.name, "true")
        else:
            # Browsers send a textarea's line breaks as CRLF.
            posted[node.name] = value.replace("\n", "\r\n") if node.kind in ("textarea", "json") else value
        if node.remove_name and changes.get(node.remove_name):
            posted[node.remove_name] = "1"
    return posted


def _kinds(root):
    return {node.key: node.kind for node in root.walk() if node.path}


def test_schema_maps_to_the_expected_field_kinds():
    root = build_editor(_spec(RICH_SCHEMA), RICH_VALUE)
    kinds = _kinds(root)
    assert kinds["title"] == "text"
    assert kinds["body"] == "textarea", "multi-line text gets a textarea"
    assert kinds["tone"] == "select" and kinds["level"] == "select"
    assert kinds["amount"] == "number" and kinds["count"] == "number"
    assert kinds["urgent"] == "checkbox"
    assert kinds["tags"] == "list" and kinds["tags[0]"] == "text" and kinds["tags[3]"] == "text"  # [3]: the add slot
    assert kinds["address"] == "object" and kinds["address.city"] == "text"
    assert kinds["lines"] == "list" and kinds["lines[0]"] == "object" and kinds["lines[1].qty"] == "number"
    assert "lines[2]" not in kinds, "no add slot for a list of objects"
    assert kinds["either"] == "json", "anyOf is edited as JSON"
    assert kinds["maybe"] == "json", "a null where a string may be stays null: edited as JSON"
    # A key the schema does not describe is edited by the type of its value.
    assert kinds["extra key/with~odd"] == "object" and kinds['extra key/with~odd.x'] == "list"
    assert [kinds[f"extra key/with~odd.x[{i}]"] for i in range(4)] == ["number", "number", "checkbox", "json"]
    nodes = {node.key: node for node in root.walk() if node.path}
    assert nodes["title"].label == "Headline", "a schema title is the label"
    assert nodes["body"].help == "The whole letter."
    assert nodes["title"].required and not nodes["body"].required
    assert [c for c, _ in nodes["tone"].choices] == ["apologetic", "neutral"], "a required value offers no empty choice"
    assert [c for c, _ in nodes["level"].choices] == ["", "1", "2", "3"] and nodes["level"].value == "2"
    assert nodes["count"].step == "1" and nodes["amount"].step == "any"
    assert nodes["tags[1]"].remove_name == REMOVE + name_of(("tags", 1))
    ids = [node.id for node in root.walk()]
    assert len(ids) == len(set(ids)), "every field has its own id"


def test_demo_workflows_map_to_fields(demo_spec):
    reply = build_editor(demo_spec("customer-reply"), {"reply": "Dear Ann, " + "we are sorry. " * 10, "tone": "neutral"})
    assert _kinds(reply) == {"reply": "textarea", "tone": "select"}
    memo = build_editor(demo_spec("underwriting-memo"), {"recommendation": "refer", "rationale": "Thin file.", "risks": ["a", "b"]})
    assert _kinds(memo) == {"recommendation": "select", "rationale": "text", "risks": "list", "risks[0]": "text",
                            "risks[1]": "text", "risks[2]": "text"}


@pytest.mark.parametrize(
    "value",
    [
        RICH_VALUE,
        {"title": "t", "amount": 1, "tone": "neutral"},  # optional keys absent stay absent
        {"title": "", "amount": 0.1, "tone": "neutral", "tags": [], "urgent": True, "count": -4, "body": ""},
        {"title": "x", "amount": 1e-7, "tone": "furious", "level": 9},  # values outside the enum survive
        {"tone": "neutral", "amount": "12", "title": 5},  # wrong types survive (edited as JSON)
        {"amount": 12345678901234567890, "title": "big", "tone": "neutral", "address": {"city": "X", "country": "FR"}},
    ],
)
def test_an_unchanged_form_gives_back_the_same_json(value):
    spec = _spec(RICH_SCHEMA)
    root = build_editor(spec, value)
    assembled, errors = assemble(spec, value, _as_posted(root))
    assert errors == {}
    assert dump(assembled) == dump(value), "same values and the same key order: not an edit"


def test_a_post_without_the_editor_fields_keeps_the_draft():
    spec = _spec(RICH_SCHEMA)
    assembled, errors = assemble(spec, RICH_VALUE, QueryDict("editor=fields"))
    assert (assembled, errors) == (RICH_VALUE, {})


def test_edits_are_assembled_with_their_types():
    spec = _spec(RICH_SCHEMA)
    root = build_editor(spec, RICH_VALUE)
    changes = {
        name_of(("title",)): "New headline",
        name_of(("amount",)): "10",
        name_of(("count",)): "7",
        name_of(("urgent",)): True,
        name_of(("tone",)): "neutral",
        name_of(("level",)): "3",
        name_of(("tags", 3)): "added",
        REMOVE + name_of(("tags", 1)): "1",
        name_of(("address", "city")): "Paris",
        name_of(("lines", 1, "qty")): "5",
        name_of(("either",)): '"text now"',
        name_of(("maybe",)): '"set"',
    }
    assembled, errors = assemble(spec, RICH_VALUE, _as_posted(root, changes))
    assert errors == {}
    assert assembled["title"] == "New headline" and assembled["amount"] == 10 and assembled["count"] == 7
    assert assembled["urgent"] is True and assembled["tone"] == "neutral" and assembled["level"] == 3
    assert assembled["tags"] == ["refund", "parcel", "added"]
    assert assembled["address"] == {"city": "Paris", "zip": "69001"}
    assert assembled["lines"][1] == {"sku": "B/2", "qty": 5}
    assert assembled["either"] == "text now" and assembled["maybe"] == "set"
    assert list(assembled)[:3] == ["title", "body", "tone"], "the draft's key order is kept"


def test_clearing_an_optional_value_drops_it_and_a_required_one_is_an_error():
    spec = _spec(RICH_SCHEMA)
    root = build_editor(spec, RICH_VALUE)
    assembled, errors = assemble(spec, RICH_VALUE, _as_posted(root, {name_of(("count",)): ""}))
    assert "count" not in assembled and errors == {}
    _, errors = assemble(spec, RICH_VALUE, _as_posted(root, {name_of(("amount",)): " "}))
    assert list(errors) == [name_of(("amount",))]


@pytest.mark.parametrize(
    "name, typed, message",
    [
        (("amount",), "ten", "Enter a number."),
        (("amount",), "inf", "Enter a number."),
        (("count",), "2.5", "Enter a whole number."),
        (("either",), "{not json", "Not valid JSON"),
    ],
)
def test_unreadable_values_are_errors_at_their_field(name, typed, message):
    spec = _spec(RICH_SCHEMA)
    root = build_editor(spec, RICH_VALUE)
    _, errors = assemble(spec, RICH_VALUE, _as_posted(root, {name_of(name): typed}))
    assert list(errors) == [name_of(name)] and errors[name_of(name)].startswith(message)


def test_a_posted_form_is_shown_back_with_its_errors():
    spec = _spec(RICH_SCHEMA)
    root = build_editor(spec, RICH_VALUE)
    posted = _as_posted(root, {name_of(("amount",)): "ten", REMOVE + name_of(("tags", 0)): "1"})
    again = build_editor(spec, RICH_VALUE, data=posted, errors={name_of(("amount",)): "Enter a number."})
    nodes = {node.key: node for node in again.walk() if node.path}
    assert nodes["amount"].value == "ten" and nodes["amount"].errors == ["Enter a number."]
    assert nodes["tags[0]"].removed


def test_certainty_and_findings_mark_their_fields(demo_spec):
    spec = demo_spec("customer-reply")
    value = {"reply": "We guarantee a refund of 40 euros today.", "tone": "neutral"}
    components = {"fields": {"reply": 0.41, "tone": 0.95}, "low_fields": ["reply"],
                  "field_spans": {"reply": [{"start": 25, "end": 33, "p": 0.2}]}}
    findings = finding_paths(spec, value, {"guardrail": "banned terms: guarantee"})
    root = build_editor(spec, value, components=components, findings=findings)
    nodes = {node.key: node for node in root.walk() if node.path}
    assert nodes["reply"].low and not nodes["tone"].low
    assert nodes["reply"].certainty == 0.41
    assert nodes["reply"].unsure == ["40 euros"]
    assert nodes["reply"].findings == ["Uses the banned term “guarantee”."] and nodes["tone"].findings == []


def test_schema_finding_is_placed_at_its_path():
    spec = _spec(RICH_SCHEMA)
    placed = finding_paths(spec, RICH_VALUE, {"schema_invalid": "lines/1/qty: 'x' is not of type 'integer'"})
    assert placed == {"lines[1].qty": ["Does not match the schema: 'x' is not of type 'integer'"]}
    assert finding_paths(spec, RICH_VALUE, {"schema_invalid": "not JSON: Expecting value at position 0"}) == {}


def test_output_problems_name_the_field(demo_spec):
    spec = demo_spec("customer-reply")
    assert output_problems(spec, json.dumps({"reply": "Hi", "tone": "neutral"})) == []
    (missing,) = output_problems(spec, json.dumps({"reply": "Hi"}))
    assert missing.path == ("tone",) and missing.text == "Tone (tone): required, but missing."
    (enum,) = output_problems(spec, json.dumps({"reply": "Hi", "tone": "furious"}))
    assert enum.path == ("tone",) and "'furious' is not one of" in enum.text
    (not_json,) = output_problems(spec, "Dear Ann")
    assert not_json.path == () and "not JSON" in not_json.text
    assert output_problems(spec, "  ")[0].text == "The output is empty."
    nested = output_problems(_spec(RICH_SCHEMA), json.dumps({"title": "t", "amount": 1, "tone": "neutral", "lines": [{"qty": "x"}]}))
    assert [(p.path, p.text.split(":")[0]) for p in nested] == [(("lines", 0, "qty"), "Lines item 1 › Qty (lines[0].qty)")]


def test_output_problems_check_the_length_of_text_outputs():
    spec = parse_definition({
        "slug": "t", "name": "T", "reviewer_groups": ["g"],
        "form": {"steps": [{"title": "S", "fields": [{"name": "text", "type": "text", "label": "Text"}]}]},
        "prompt": {"user": "{{ text }}"}, "output": {"format": "text", "max_chars": 10},
    })
    assert output_problems(spec, "short") == []
    assert "the workflow allows 10" in output_problems(spec, "much too long a text")[0].text
