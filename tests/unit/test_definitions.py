"""The workflow definition format (DESIGN.md section 3): what parses, and how refusals read."""
from __future__ import annotations

import pytest

from tests.unit.conftest import DEMO_SLUGS, demo_yaml
from workflows.definitions import DefinitionError, definition_hash, parse_definition, parse_yaml


def _refusal(data) -> dict[str, str]:
    """Parse ``data`` expecting a refusal; return its errors as {key: reason}."""
    with pytest.raises(DefinitionError) as info:
        parse_definition(data)
    errors = dict(info.value.errors)
    # The message shown to authors carries every key and reason too.
    for key, reason in info.value.errors:
        assert f"{key}: {reason}" in str(info.value)
    return errors


@pytest.mark.parametrize("slug", DEMO_SLUGS)
def test_demo_workflows_parse(slug):
    spec = parse_yaml(demo_yaml(slug))
    assert spec.slug == slug
    assert spec.output.format == "json"
    assert spec.output.json_schema["type"] == "object"
    assert spec.form.all_fields(), "every demo workflow has form fields"
    assert 0 <= spec.routing.block_below <= spec.routing.auto_approve_at <= 1


def test_demo_definition_round_trips_through_as_dict(demo_spec):
    # A published version stores as_dict(); WorkflowVersion.spec parses it back.
    spec = demo_spec("customer-reply")
    again = parse_definition(spec.as_dict())
    assert again == spec
    assert definition_hash(again.as_dict()) == definition_hash(spec.as_dict())
    assert "schema" in spec.as_dict()["output"], "the JSON Schema is stored under its YAML key"


def test_definition_hash_ignores_key_order(demo_data):
    data = demo_data()
    reordered = dict(reversed(list(data.items())))
    assert definition_hash(data) == definition_hash(reordered)
    data["name"] = "Customer reply (v2)"
    assert definition_hash(data) != definition_hash(reordered)


def test_unknown_field_type_names_the_key(demo_data):
    data = demo_data()
    data["form"]["steps"][0]["fields"][0]["type"] = "colour"
    errors = _refusal(data)
    assert list(errors) == ["form.steps[0].fields[0].type"]
    assert "textarea" in errors["form.steps[0].fields[0].type"], "the reason lists the allowed types"


def test_unknown_field_type_in_a_later_step(demo_data):
    data = demo_data()
    data["form"]["steps"][1]["fields"][2]["type"] = "checkbox"
    assert list(_refusal(data)) == ["form.steps[1].fields[2].type"]


@pytest.mark.parametrize("kind", ["choice", "multichoice"])
@pytest.mark.parametrize("choices", [None, []])
def test_choice_field_without_choices(demo_data, kind, choices):
    data = demo_data()
    field = data["form"]["steps"][0]["fields"][2]
    assert field["name"] == "channel"
    field["type"] = kind
    if choices is None:
        del field["choices"]
    else:
        field["choices"] = choices
    errors = _refusal(data)
    assert list(errors) == ["form.steps[0].fields[2]"]
    assert f"a {kind} field needs a non-empty 'choices' list" in errors["form.steps[0].fields[2]"]


def test_choices_on_a_text_field_refused(demo_data):
    data = demo_data()
    data["form"]["steps"][0]["fields"][0]["choices"] = ["a", "b"]
    errors = _refusal(data)
    assert "only allowed on choice and multichoice" in errors["form.steps[0].fields[0]"]


def test_min_greater_than_max_refused(demo_data):
    data = demo_data("underwriting-memo")
    data["form"]["steps"][0]["fields"][2].update(min=10, max=5)
    errors = _refusal(data)
    assert errors == {"form.steps[0].fields[2]": "'min' is greater than 'max'"}


@pytest.mark.parametrize("part", ["user", "system"])
def test_placeholder_naming_no_field_is_refused(demo_data, part):
    data = demo_data()
    data["prompt"][part] += "\nAccount: {{ account_number }}"
    errors = _refusal(data)
    assert list(errors) == [f"prompt.{part}"]
    assert "{{ account_number }}" in errors[f"prompt.{part}"]
    assert "names no form field" in errors[f"prompt.{part}"]


def test_placeholder_without_spaces_is_checked_too(demo_data):
    data = demo_data()
    data["prompt"]["user"] = "Hello {{customer_nme}}"
    errors = _refusal(data)
    assert "{{ customer_nme }}" in errors["prompt.user"]


def test_feedback_placeholder_is_allowed(demo_data):
    data = demo_data()
    data["prompt"]["user"] += "\nReviewer feedback: {{ feedback }}"
    assert "{{ feedback }}" in parse_definition(data).prompt.user


def test_placeholder_refused_at_publish_time(db):
    # Publishing is where the error must surface, not later at generation time.
    from workflows import services
    from workflows.models import Workflow

    text = demo_yaml("customer-reply").replace("{{ complaint }}", "{{ complaint_text }}")
    with pytest.raises(DefinitionError) as info:
        services.workflow_publish_yaml(text=text)
    assert "prompt.user" in str(info.value) and "complaint_text" in str(info.value)
    assert not Workflow.objects.filter(slug="customer-reply").exists()


def test_block_below_above_auto_approve_at_refused(demo_data):
    data = demo_data()
    data["routing"].update(auto_approve_at=0.7, block_below=0.8)
    errors = _refusal(data)
    assert list(errors) == ["routing.block_below"]
    assert "auto_approve_at" in errors["routing.block_below"]


def test_block_below_equal_to_auto_approve_at_is_allowed(demo_data):
    # Equal thresholds are a legitimate two-lane policy (no async lane).
    data = demo_data()
    data["routing"].update(auto_approve_at=0.8, block_below=0.8)
    spec = parse_definition(data)
    assert spec.routing.block_below == spec.routing.auto_approve_at == 0.8


@pytest.mark.parametrize("key, value", [("auto_approve_at", 1.5), ("block_below", -0.1), ("audit_sample_rate", 2)])
def test_thresholds_outside_unit_interval_refused(demo_data, key, value):
    data = demo_data()
    data["routing"][key] = value
    assert f"routing.{key}" in _refusal(data)


def test_unknown_finding_code_in_always_block_on_refused(demo_data):
    data = demo_data()
    data["routing"]["always_block_on"] = ["schema_invalid", "low_vibes"]
    errors = _refusal(data)
    assert list(errors) == ["routing.always_block_on"]
    assert "low_vibes" in errors["routing.always_block_on"]
    assert "schema_invalid" in errors["routing.always_block_on"], "the reason lists the known codes"


def test_invalid_json_schema_refused(demo_data):
    data = demo_data()
    data["output"]["schema"] = {"type": "object", "properties": {"reply": {"type": "strnig"}}}
    errors = _refusal(data)
    assert list(errors) == ["output.schema"]
    assert "not a valid JSON Schema" in errors["output.schema"]


def test_json_output_without_schema_refused(demo_data):
    data = demo_data()
    del data["output"]["schema"]
    errors = _refusal(data)
    assert "needs a 'schema'" in errors["output.schema"]


def test_text_output_needs_no_schema(demo_data):
    data = demo_data()
    data["output"] = {"format": "text", "max_chars": 2000}
    spec = parse_definition(data)
    assert spec.output.format == "text" and spec.output.json_schema is None


def test_duplicate_field_names_refused(demo_data):
    data = demo_data()
    data["form"]["steps"][1]["fields"].append({"name": "channel", "type": "text", "label": "Channel again"})
    errors = _refusal(data)
    assert list(errors) == ["form.steps[1].fields[3].name"]
    assert "'channel'" in errors["form.steps[1].fields[3].name"]


def test_duplicate_within_one_step_refused(demo_data):
    data = demo_data()
    fields = data["form"]["steps"][0]["fields"]
    fields.append(dict(fields[0]))
    assert list(_refusal(data)) == [f"form.steps[0].fields[{len(fields) - 1}].name"]


def test_unknown_key_refused(demo_data):
    data = demo_data()
    data["routing"]["auto_aprove_at"] = 0.9
    errors = _refusal(data)
    assert "routing.auto_aprove_at" in errors


def test_missing_required_key_refused(demo_data):
    data = demo_data()
    del data["prompt"]
    assert "prompt" in _refusal(data)


def test_several_errors_are_all_reported(demo_data):
    data = demo_data()
    data["slug"] = "Not A Slug"
    data["form"]["steps"][0]["fields"][0]["type"] = "colour"
    errors = _refusal(data)
    assert {"slug", "form.steps[0].fields[0].type"} <= set(errors)


def test_invalid_yaml_gives_a_line_number():
    text = "slug: broken\nname: Broken\nform:\n  steps: [\n    - title: x\n"
    with pytest.raises(DefinitionError) as info:
        parse_yaml(text)
    ((key, reason),) = info.value.errors
    assert key.startswith("line ")
    assert int(key.split()[1]) >= 4, "the line points at or after the unclosed bracket"
    assert "not valid YAML" in reason


def test_yaml_tab_indentation_gives_a_line_number():
    text = "slug: a\nname: A\nform:\n\tsteps: []\n"
    with pytest.raises(DefinitionError) as info:
        parse_yaml(text)
    assert info.value.errors[0][0] == "line 4"


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "", "42\n"])
def test_non_mapping_document_refused(text):
    with pytest.raises(DefinitionError) as info:
        parse_yaml(text)
    assert info.value.errors == [("(definition)", "must be a mapping of keys to values")]


def test_field_named_feedback_is_refused(demo_data):
    # {{ feedback }} is the reviewer's feedback; a field of that name would be overwritten by it.
    data = demo_data()
    data["form"]["steps"][1]["fields"][0]["name"] = "feedback"
    data["prompt"]["user"] = data["prompt"]["user"].replace("{{ complaint }}", "{{ feedback }}")
    errors = _refusal(data)
    assert "reserved" in errors["form.steps[1].fields[0].name"]


@pytest.mark.parametrize("name", ["Customer", "1st", "customer-name", ""])
def test_field_names_must_be_identifiers(demo_data, name):
    data = demo_data()
    data["form"]["steps"][0]["fields"][0]["name"] = name
    assert "form.steps[0].fields[0].name" in _refusal(data)


@pytest.mark.parametrize("braces", ["{{ customer.name }}", "{{ customer_name|upper }}", "{{ }}", "{{ 1st }}"])
def test_braces_that_are_not_a_placeholder_are_refused(demo_data, braces):
    # Not a field placeholder, so it would reach the model verbatim: refuse it at publish time.
    data = demo_data()
    data["prompt"]["user"] += f"\nAlso: {braces}"
    errors = _refusal(data)
    assert list(errors) == ["prompt.user"]
    assert braces in errors["prompt.user"] and "is not a placeholder" in errors["prompt.user"]


def test_sla_minutes_must_be_positive(demo_data):
    data = demo_data()
    data["routing"]["sla_minutes"] = {"blocking_review": 0, "async_review": 60}
    assert "routing.sla_minutes.blocking_review" in _refusal(data)
    data["routing"]["sla_minutes"] = {"blocking_reveiw": 30}
    assert any(key.startswith("routing.sla_minutes") for key in _refusal(data))


def test_a_model_timeout_that_cannot_fit_in_the_task_is_refused_naming_the_key(demo_data):
    from workflows.definitions import DefinitionError, parse_definition

    data = demo_data()
    data["model"]["timeout_seconds"] = 120
    with pytest.raises(DefinitionError) as info:
        parse_definition(data)
    assert info.value.errors[0][0] == "model.timeout_seconds"
    data["model"]["timeout_seconds"] = 20
    assert parse_definition(data).model.timeout_seconds == 20
