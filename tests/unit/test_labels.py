"""Labels from reviewer decisions: the edit size and its cut-off (workflows/labels.py)."""
import json

import pytest

from workflows.labels import MATERIAL, MINOR_EDIT_MAX, Label, edit_distance, label_for

REPLY = ("Dear Ann, thank you for writing to us. We are sorry that your parcel arrived broken. "
         "A replacement is on its way and should reach you within three working days.")


def doc(**fields):
    return json.dumps({"reply": REPLY, "tone": "apologetic", **fields})


def test_nothing_that_matters_changed_is_zero():
    assert edit_distance(doc(), doc(), json_output=True) == 0.0
    reordered = json.dumps(dict(reversed(list(json.loads(doc()).items()))), indent=4)
    assert edit_distance(doc(), reordered, json_output=True) == 0.0
    assert edit_distance("Hello  there\n", "Hello there", json_output=False) == 0.0


def test_a_fixed_name_is_minor_and_a_rewrite_is_major():
    fixed = doc(reply=REPLY.replace("Ann", "Anne"))
    small = edit_distance(doc(), fixed, json_output=True)
    assert 0 < small <= MINOR_EDIT_MAX and label_for("edit", small) == Label.MINOR_EDIT
    rewrite = doc(reply="We cancelled your order and refunded the full amount to your card today.")
    large = edit_distance(doc(), rewrite, json_output=True)
    assert large > MINOR_EDIT_MAX and label_for("edit", large) == Label.MAJOR_EDIT
    assert Label.MAJOR_EDIT in MATERIAL and Label.MINOR_EDIT not in MATERIAL


def test_hand_computed_distance():
    # "abcd" -> "abxd": 3 characters kept of 4 + 4: 1 - 6/8.
    assert edit_distance("abcd", "abxd", json_output=False) == pytest.approx(0.25)
    # A value that appears counts with all its characters: {"a": "xy"} -> {"a": "xy", "b": "zz"}.
    assert edit_distance('{"a": "xy"}', '{"a": "xy", "b": "zz"}', json_output=True) == pytest.approx(1 - 4 / 6, abs=1e-6)
    assert edit_distance("", "", json_output=False) == 0.0
    assert edit_distance("abc", "xyz", json_output=False) == 1.0


def test_a_short_decision_field_flipped_is_major():
    before = json.dumps({"decision": "approve", "reason": "income verified"})
    after = json.dumps({"decision": "decline", "reason": "income verified"})
    assert label_for("edit", edit_distance(before, after, json_output=True)) == Label.MAJOR_EDIT


def test_not_json_is_compared_as_text():
    assert edit_distance("not json", "not json!", json_output=True) == pytest.approx(1 - 16 / 17, abs=1e-6)


@pytest.mark.parametrize("decision, distance, label", [
    ("approve", 0.0, Label.UNCHANGED), ("approve", None, Label.UNCHANGED), ("edit", 0.05, Label.MINOR_EDIT),
    ("edit", 0.5, Label.MAJOR_EDIT), ("reject", None, Label.REJECTED), ("regenerate", None, Label.REJECTED),
])
def test_label_for_each_decision(decision, distance, label):
    assert label_for(decision, distance) == label
