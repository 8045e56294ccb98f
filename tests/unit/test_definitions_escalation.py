"""The SLA's second limit in a definition (issue 8): `routing.escalation_group` and
`routing.escalate_after_minutes` come together, and escalation comes after the due time."""
from __future__ import annotations

import pytest

from workflows.definitions import DefinitionError, parse_definition


def _refusal(data) -> dict[str, str]:
    with pytest.raises(DefinitionError) as info:
        parse_definition(data)
    return dict(info.value.errors)


def test_both_keys_parse_and_round_trip(demo_data):
    data = demo_data()
    data["routing"].update(escalation_group="support-leads", escalate_after_minutes={"blocking_review": 120})
    spec = parse_definition(data)
    assert spec.routing.escalation_group == "support-leads"
    assert spec.routing.escalate_after_minutes == {"blocking_review": 120}
    assert parse_definition(spec.as_dict()) == spec


def test_without_them_nothing_escalates(demo_data):
    routing = parse_definition(demo_data()).routing
    assert routing.escalation_group is None and routing.escalate_after_minutes == {}


@pytest.mark.parametrize("routing, key, words", [
    ({"escalation_group": "leads"}, "routing.escalate_after_minutes", "needs escalate_after_minutes"),
    ({"escalate_after_minutes": {"blocking_review": 90}}, "routing.escalation_group", "needs an escalation_group"),
    ({"escalation_group": "leads", "escalate_after_minutes": {"blocking_review": 30}},
     "routing.escalate_after_minutes.blocking_review", "more than sla_minutes.blocking_review (30)"),
    ({"escalation_group": "leads", "escalate_after_minutes": {"async_review": 60}},
     "routing.escalate_after_minutes.async_review", "more than sla_minutes.async_review (1440)"),
    ({"escalation_group": "  ", "escalate_after_minutes": {"blocking_review": 90}}, "routing.escalation_group",
     "must name a group"),
    ({"escalation_group": "leads", "escalate_after_minutes": {"blocking_review": 0}},
     "routing.escalate_after_minutes.blocking_review", "greater than 0"),
    ({"escalation_group": "leads", "escalate_after_minutes": {"audit_sample": 90}},
     "routing.escalate_after_minutes.audit_sample.[key]", "blocking_review"),
])
def test_refusals_name_the_key(demo_data, routing, key, words):
    data = demo_data()
    data["routing"].update(routing)
    errors = _refusal(data)
    assert key in errors, errors
    assert words in errors[key]


def test_a_lane_without_a_due_time_may_still_escalate(demo_data):
    data = demo_data()
    data["routing"].update(sla_minutes={"blocking_review": 30}, escalation_group="leads",
                           escalate_after_minutes={"async_review": 10})
    assert parse_definition(data).routing.escalate_after_minutes == {"async_review": 10}
