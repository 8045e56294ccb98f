"""Which workflows may show a draft to its submitter while it is written (issue 8): only those
whose routing cannot hold the draft for a person because of what it says. Pure."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from workflows.definitions import parse_definition
from workflows.draft_stream import streams_to_submitter

DEMO = Path(__file__).resolve().parents[2] / "workflows" / "demo_workflows"


def streamable_definition() -> dict:
    """customer-reply, made a workflow that releases every draft without blocking on content."""
    definition = yaml.safe_load((DEMO / "customer-reply.yaml").read_text())
    definition["slug"] = "customer-note"
    definition["name"] = "Customer note"
    definition["output"] = {"format": "text"}
    definition["routing"].update(block_below=0.0, always_block_on=[])
    definition["pii"] = "allow"
    for step in definition["form"]["steps"]:
        for field in step["fields"]:
            field.pop("pii", None)
    return definition


def test_the_demo_workflows_never_stream():
    # Each can hold a draft for blocking review because of its score or a finding.
    for path in DEMO.glob("*.yaml"):
        assert not streams_to_submitter(parse_definition(yaml.safe_load(path.read_text()))), path.name


def test_a_workflow_that_cannot_block_on_content_streams():
    assert streams_to_submitter(parse_definition(streamable_definition()))


def _with(change):
    definition = copy.deepcopy(streamable_definition())
    change(definition)
    return parse_definition(definition)


@pytest.mark.parametrize("why, change", [
    ("a score can block", lambda d: d["routing"].update(block_below=0.3)),
    ("a finding blocks", lambda d: d["routing"].update(always_block_on=["pii_in_output"])),
    ("a guardrail blocks", lambda d: d["routing"].update(always_block_on=["guardrail"])),
    ("personal data is redacted and checked", lambda d: d.update(pii="redact")),
    ("a field is personal data", lambda d: d["form"]["steps"][0]["fields"][0].update(pii=True)),
    ("JSON output (repair, raw JSON)", lambda d: d.update(output={"format": "json", "schema": {"type": "object"}})),
    ("a QA grade may add a blocking finding", lambda d: d.update(qa={"model": "gpt-4o-mini", "rubric": "Polite."})),
    ("a cascade may replace the text", lambda d: d["model"].update(escalate_to="gpt-4o")),
])
def test_anything_that_may_hold_a_draft_after_its_text_began_stops_streaming(why, change):
    assert not streams_to_submitter(_with(change)), why


def test_a_held_workflow_never_streams():
    assert not streams_to_submitter(parse_definition(streamable_definition()), automation_hold=True)
