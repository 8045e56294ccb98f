"""The reviewer guidelines keys (issue 8): `guidelines` and `review_rubric`, shown on the
review page; a definition without them keeps the hash it had before they existed."""
import pytest

from workflows.definitions import DefinitionError, definition_hash, parse_definition


def test_demo_workflows_carry_guidelines(demo_spec):
    for slug in ("customer-reply", "compliance-report", "underwriting-memo"):
        spec = demo_spec(slug)
        assert spec.guidelines.strip() and len(spec.review_rubric) == 3
        assert spec.as_dict()["guidelines"] == spec.guidelines


def test_guidelines_are_optional_and_left_out_of_the_hash_while_empty(demo_data):
    data = demo_data()
    data.pop("guidelines", None)
    data.pop("review_rubric", None)
    spec = parse_definition(data)
    assert (spec.guidelines, spec.review_rubric) == ("", [])
    assert "guidelines" not in spec.as_dict() and "review_rubric" not in spec.as_dict()
    with_empty = parse_definition({**data, "guidelines": "", "review_rubric": []})
    assert definition_hash(with_empty.as_dict()) == definition_hash(spec.as_dict())
    with_text = parse_definition({**data, "guidelines": "Check the refund."})
    assert definition_hash(with_text.as_dict()) != definition_hash(spec.as_dict())


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"guidelines": "x" * 4001}, "guidelines"),
        ({"review_rubric": [""]}, "review_rubric[0]"),
        ({"review_rubric": ["ok"] * 21}, "review_rubric"),
        ({"review_rubric": "not a list"}, "review_rubric"),
    ],
)
def test_bad_guidelines_are_refused_naming_the_key(demo_data, changes, key):
    with pytest.raises(DefinitionError) as refused:
        parse_definition({**demo_data(), **changes})
    assert [k for k, _ in refused.value.errors] == [key]
