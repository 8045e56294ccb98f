"""What the reviewer sees of the model's certainty: the per-field table in the score box and
the draft with its less-sure fields and passages marked (no database needed)."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

from django.template.loader import render_to_string

from workflows.pipeline.confidence import score
from workflows.pipeline.types import EngineReply, TokenLogprob
from workflows.pipeline.validators import Validation
from workflows.templatetags.reviewdesk import certainty_rows, draft_certainty

FORCED = 1e-13
MEMO_SCHEMA = {
    "type": "object",
    "properties": {
        "recommendation": {"type": "string", "enum": ["approve", "decline", "refer"]},
        "rationale": {"type": "string"},
        "risks": {"type": "array", "items": {"type": "string"}},
    },
}


def scored_draft(pairs, schema=MEMO_SCHEMA, *, shown=None):
    content = "".join(t for t, _ in pairs)
    reply = EngineReply(engine="openai", model_requested="m", model_reported="m", content=content, finish_reason="stop",
                        token_logprobs=tuple(TokenLogprob(t, math.log(p)) for t, p in pairs), calls=())
    parsed = json.loads(content) if schema else None
    value, components = score(reply, Validation(parsed=parsed), json_schema=schema, content=shown)
    components["routing_reason"] = "test"
    return SimpleNamespace(
        parsed=parsed, content=shown or content, score=value, score_components=components, lane="blocking_review",
        get_lane_display="Blocking review", engine="openai", findings=[], model="m", attempt=1, prompt_tokens=1,
        completion_tokens=1, latency_ms=1,
    )


MEMO = [("{\"", FORCED), ("recommendation", FORCED), ("\":\"", FORCED), ("ref", 0.4), ("er", FORCED),
        ("\",\"", FORCED), ("rationale", FORCED), ("\":\"", FORCED), ("Revenue", 0.99), (" covers", 0.99),
        (" the", 0.99), (" loan", 0.99), (" <b>", 0.99), ("3", 0.1), ("x", 0.2), (".", 0.99), ("\",\"", FORCED),
        ("risks", FORCED), ("\":[\"", FORCED), ("Thin", 0.99), (" margins", 0.99), ("\",\"", FORCED),
        ("Seasonal", 0.3), (" demand", 0.99), ("\"]}", FORCED)]


def test_rows_are_worst_first_and_flag_the_low_ones():
    rows = certainty_rows(scored_draft(MEMO).score_components)
    assert [r["field"] for r in rows] == ["recommendation", "rationale", "risks"]
    assert [r["label"] for r in rows] == ["Recommendation", "Rationale", "Risks"]
    assert rows[0]["low"] and rows[0]["certainty"] == 0.4


def test_rows_of_a_draft_without_fields_are_empty():
    assert certainty_rows({}) == [] and certainty_rows(None) == [] and certainty_rows({"fields": "x"}) == []


def test_score_box_has_the_table():
    html = render_to_string("workflows/_score.html", {"draft": scored_draft(MEMO)})
    assert "Model certainty by field" in html
    assert html.index("Recommendation") < html.index("Rationale") < html.index("Risks")
    assert html.count("less sure") == 3
    assert "token probabilities of the answer's values" in html


def test_json_draft_is_shown_as_fields_with_the_low_ones_marked():
    draft = scored_draft(MEMO)
    view = draft_certainty(draft)
    assert view["kind"] == "fields"
    recommendation, rationale, risks = view["fields"]
    assert recommendation["low"] and recommendation["label"] == "Recommendation"
    assert [s["text"] for s in rationale["value"]["segments"] if s["low"]] == ["3x"]
    assert [item["low"] for item in risks["value"]["items"]] == [False, True]
    html = render_to_string("workflows/_draft_certainty.html", {"draft": draft})
    assert html.count('class="draft-field low-certainty"') == 3
    assert '<mark class="low-certainty"' in html
    assert "&lt;b&gt;" in html and "<b>" not in html, "the draft is escaped"
    assert "less sure" in html and "visually-hidden" in html


def test_text_draft_marks_its_low_spans_in_the_restored_text():
    pairs = [("Dear", 0.99), (" <", 0.99), ("NAME", 0.99), (">,", 0.99), (" your", 0.99), (" 12", 0.1),
             (" pounds", 0.3), (" are", 0.99), (" back", 0.99), (".", 0.99)]
    shown = "Dear Ann & Bob, your 12 pounds are back."
    draft = scored_draft(pairs, schema=None, shown=shown)
    html = render_to_string("workflows/_draft_certainty.html", {"draft": draft})
    assert "Ann &amp; Bob" in html
    assert '<span class="visually-hidden">[less sure:] </span>12 pounds<span' in html


def test_spans_that_do_not_fit_are_dropped_not_a_crash():
    draft = SimpleNamespace(parsed=None, content="short", score_components={"spans": [
        {"start": 2, "end": 99}, {"start": "a"}, "junk", {"start": 0, "end": 2, "p": 0.1}]})
    view = draft_certainty(draft)
    assert [(s["text"], s["low"]) for s in view["segments"]] == [("sh", True), ("ort", False)]


def test_a_draft_scored_before_fields_existed_still_renders():
    draft = SimpleNamespace(parsed={"reply": "Hi", "n": 3, "extra": {"a": 1}}, content="{}", score_components={})
    html = render_to_string("workflows/_draft_certainty.html", {"draft": draft})
    assert "low-certainty" not in html and "Hi" in html and "3" in html


def test_the_partial_works_when_included_from_a_page_with_its_own_partials():
    from django.template import engines

    page = engines["django"].from_string(
        "{% load partials %}{% partialdef decision %}D{% endpartialdef %}{% include 'workflows/_draft_certainty.html' %}")
    draft = SimpleNamespace(parsed=None, content="hello world", score_components={"spans": [{"start": 0, "end": 5, "p": 0.1}]})
    assert '</span>hello<span class="visually-hidden"> [end]</span></mark> world' in page.render({"draft": draft})
