"""``pipeline.run`` is pure: no database, no Redis needed (temperature > 0, so no cache), a
frozen result. pytest-django refuses database access in tests without a db fixture, so any
ORM query inside run() would fail these tests."""
from __future__ import annotations

import dataclasses
import importlib
import json

import pytest

from tests.scripted import ScriptedEngine
from workflows.pipeline import run
from workflows.pipeline.engines.offline import OfflineEngine

VALUES = {"customer_name": "Ann Example", "customer_email": "ann@example.com", "channel": "email",
          "complaint": "My parcel arrived broken. Reach me at +44 7911 123456.", "order_value": "42.50",
          "refund_offered": True}


def test_run_with_the_offline_engine_touches_no_database_and_returns_a_frozen_result(demo_spec):
    result = run(demo_spec(), dict(VALUES), engine=OfflineEngine())
    assert result.engine == "offline" and not result.failed
    assert json.loads(result.content)["tone"] in ("apologetic", "neutral")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.score = 1.0  # type: ignore[misc]
    assert [c.purpose for c in result.calls] == ["draft"]


def test_the_model_never_sees_what_was_redacted_and_the_result_has_it_back(demo_spec):
    seen = []

    class Recording(ScriptedEngine):
        def complete(self, request):
            seen.append(request.user + request.system)
            return super().complete(request)

    content = json.dumps({"reply": "Dear <CUSTOMER_NAME>, we will call <PHONE_NUMBER_1>.", "tone": "apologetic"})
    result = run(demo_spec(), dict(VALUES), engine=Recording(content, 0.99))
    assert "Ann Example" not in seen[0] and "7911 123456" not in seen[0]
    assert json.loads(result.content)["reply"] == "Dear Ann Example, we will call +44 7911 123456."
    assert {"customer_name", "PHONE_NUMBER"} <= set(result.redacted)


run_module = importlib.import_module("workflows.pipeline.run")


def test_the_stages_run_in_the_documented_order():
    # docs/ARCHITECTURE.md names these functions; a rename must update the table there.
    names = ["redact_stage", "cache_lookup_stage", "budget_check_stage", "render_stage", "call_stage",
             "restore_stage", "validate_stage", "repair_stage", "agreement_stage", "qa_stage", "score_stage",
             "cascade_stage"]
    assert all(callable(getattr(run_module, name)) for name in names)
    source = open(run_module.__file__).read()
    positions = [source.index(f"def {name}(") for name in names]
    assert positions == sorted(positions)
