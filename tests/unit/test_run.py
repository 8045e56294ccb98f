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


# --- a sure model with a bad answer, stage by stage (an in-process engine answering in turn) ---

class Turns:
    """Answers in turn, per model; a model with no answers left (or listed in ``down``) is
    unavailable. Token probabilities 0.99, so only findings keep a draft from auto-approval."""

    name = "openai"

    def __init__(self, answers: dict[str, list[str]], down=(), delay: float = 0.0):
        self.answers = {model: list(texts) for model, texts in answers.items()}
        self.down = set(down)
        self.delay = delay
        self.requests = []

    def complete(self, request):
        import time

        from workflows.pipeline.types import ModelUnavailable

        self.requests.append(request)
        time.sleep(self.delay)
        queue = self.answers.get(request.model) or []
        if request.model in self.down or not queue:
            raise ModelUnavailable(request.model, "down", ())
        return ScriptedEngine(queue.pop(0), 0.99, request.model).complete(request)


def _spec(demo_data, **changes):
    from workflows.definitions import parse_definition

    data = demo_data()
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        target = data
        for key in path:
            target = target[key]
        target[last] = value
    return parse_definition(data)


GOOD = json.dumps({"reply": "Dear <CUSTOMER_NAME>, we are sorry.", "tone": "apologetic"})


def test_personal_data_quoted_in_a_repair_error_does_not_count_as_supplied(demo_data):
    invented = "Write to bob.smith@gmail.com today."
    engine = Turns({"gpt-4o-mini": [json.dumps(invented), json.dumps({"reply": invented, "tone": "neutral"})]})
    result = run(_spec(demo_data), dict(VALUES), engine=engine)
    assert "bob.smith@gmail.com" not in engine.requests[1].user  # masked in the repair prompt
    assert "pii_in_output" in result.findings  # and still found in the repaired answer


def test_a_grader_that_cannot_grade_keeps_the_draft_from_auto_approval(demo_data):
    spec = _spec(demo_data, qa={"model": "grader", "rubric": "Be kind."})
    result = run(spec, dict(VALUES), engine=Turns({"gpt-4o-mini": [GOOD]}, down=["grader"]))
    assert "qa_failed" in result.findings and "no QA grade" in result.finding_details["qa_failed"]
    assert result.components["certainty"] > 0.9  # the tokens were sure; the missing grade decides


def test_a_grade_that_is_not_a_number_is_no_grade(demo_data):
    spec = _spec(demo_data, qa={"model": "grader", "rubric": "Be kind."})
    answers = {"gpt-4o-mini": [GOOD], "grader": [json.dumps({"grade": True, "problems": []})]}
    assert "qa_failed" in run(spec, dict(VALUES), engine=Turns(answers)).findings


def test_a_cascade_never_replaces_a_valid_draft_with_an_invalid_one(demo_data):
    spec = _spec(demo_data, model__fallback=[], model__escalate_to="big",
                 qa={"model": "grader", "rubric": "Be kind.", "fail_below": 0.5})
    answers = {"gpt-4o-mini": [GOOD], "big": ["not json"],
               "grader": [json.dumps({"grade": 0.2, "problems": ["curt"]}), json.dumps({"grade": 0.9, "problems": []})]}
    result = run(spec, dict(VALUES), engine=Turns(answers))
    assert result.model == "gpt-4o-mini" and "schema_invalid" not in result.findings
    (earlier,) = result.earlier_attempts
    assert earlier.model == "big" and "schema_invalid" in earlier.findings


def test_a_spent_time_budget_skips_the_optional_stages_and_still_returns_the_draft(demo_data):
    spec = _spec(demo_data, model__escalate_to="big", model__fallback=[],
                 qa={"model": "grader", "rubric": "Be kind."})
    engine = Turns({"gpt-4o-mini": ["not json", GOOD], "big": [GOOD]}, delay=0.6)
    from workflows.pipeline.types import RunOptions

    result = run(spec, dict(VALUES), engine=engine, options=RunOptions(time_budget_seconds=1.5))
    # After a 0.6 s answer, 0.9 s are left: less than a call is given (1 s), so repair, QA
    # and cascade are skipped and the run returns what it has.
    assert [r.purpose for r in engine.requests] == ["draft"]
    assert "schema_invalid" in result.findings and "qa_failed" in result.findings
    assert engine.requests[0].timeouts.total <= 1.5


def test_finish_reason_content_filter_is_a_cut_answer(demo_data):
    class Filtered(ScriptedEngine):
        def complete(self, request):
            import dataclasses as dc

            return dc.replace(super().complete(request), finish_reason="content_filter")

    result = run(_spec(demo_data), dict(VALUES), engine=Filtered(GOOD, 0.99))
    assert "truncated" in result.findings and "content filter" in result.finding_details["truncated"]
