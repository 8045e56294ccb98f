"""Properties of the certainty score, for any answer and any token probabilities: it stays in
[0, 1], it is JSON-serialisable, and raising a token's probability never lowers it."""
from __future__ import annotations

import itertools
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflows.pipeline.confidence import score
from workflows.pipeline.types import EngineReply, TokenLogprob
from workflows.pipeline.validators import Validation

SCHEMA = {
    "type": "object",
    "properties": {
        "reply": {"type": "string"},
        "tone": {"type": "string", "enum": ["apologetic", "neutral", "apology"]},
        "risks": {"type": "array", "items": {"type": "string"}},
        "amount": {"type": "number"},
        "ok": {"type": "boolean"},
        "note": {"type": ["string", "null"]},
        "address": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}

PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

documents = st.fixed_dictionaries(
    {"reply": st.text(max_size=40), "tone": st.sampled_from(["apologetic", "neutral", "apology"])},
    optional={
        "risks": st.lists(st.text(max_size=12), max_size=3),
        "amount": st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False, width=32),
        "ok": st.booleans(),
        "note": st.none() | st.text(max_size=8),
        "address": st.fixed_dictionaries({"city": st.text(max_size=8)}),
        "confidence": st.floats(0, 1),
    },
)
logprobs = st.floats(min_value=-40.0, max_value=0.0) | st.just(-math.inf)


@st.composite
def tokenised(draw, text_strategy):
    """(content, token texts) with the tokens cut anywhere; sometimes whitespace is dropped
    from the tokens (as the fake server does) or a token is garbled."""
    content = draw(text_strategy)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(content)), max_size=max(1, len(content) // 2)))))
    bounds = [0, *cuts, len(content)]
    tokens = [content[a:b] for a, b in itertools.pairwise(bounds) if b > a] or [content]
    mode = draw(st.sampled_from(["exact", "exact", "no_spaces", "garbled"]))
    if mode == "no_spaces":
        tokens = [t.replace(" ", "") for t in tokens]
    elif mode == "garbled" and tokens:
        i = draw(st.integers(0, len(tokens) - 1))
        tokens[i] = draw(st.text(max_size=6))
    return content, tokens


json_answers = tokenised(st.builds(
    lambda doc, indent, ascii_: json.dumps(doc, indent=indent, ensure_ascii=ascii_),
    documents, st.sampled_from([None, 2]), st.booleans(),
))
text_answers = tokenised(st.text(min_size=1, max_size=120))


def _score(content, tokens, lps, *, is_json):
    reply = EngineReply(engine="openai", model_requested="m", model_reported="m", content=content,
                        finish_reason="stop", token_logprobs=tuple(TokenLogprob(t, lp) for t, lp in zip(tokens, lps)),
                        calls=())
    parsed = json.loads(content) if is_json else None
    return score(reply, Validation(parsed=parsed), json_schema=SCHEMA if is_json else None)


def _check(value, components):
    assert 0.0 <= value <= 1.0
    assert 0.0 <= components["certainty"] <= 1.0
    json.dumps(components, allow_nan=False)
    for certainty in components.get("fields", {}).values():
        assert 0.0 <= certainty <= 1.0


@PROPERTIES
@given(json_answers, st.data())
def test_json_score_is_in_the_unit_interval_and_monotone(answer, data):
    content, tokens = answer
    lps = data.draw(st.lists(logprobs, min_size=len(tokens), max_size=len(tokens)))
    value, components = _score(content, tokens, lps, is_json=True)
    _check(value, components)
    i = data.draw(st.integers(0, len(tokens) - 1))
    raised = list(lps)
    raised[i] = data.draw(st.floats(min_value=lps[i] if lps[i] > -math.inf else -40.0, max_value=0.0))
    higher, higher_components = _score(content, tokens, raised, is_json=True)
    assert higher >= value
    assert higher_components["certainty"] >= components["certainty"]
    for field, certainty in components.get("fields", {}).items():
        assert higher_components["fields"][field] >= certainty


@PROPERTIES
@given(text_answers, st.data())
def test_text_score_is_in_the_unit_interval_and_monotone(answer, data):
    content, tokens = answer
    lps = data.draw(st.lists(logprobs, min_size=len(tokens), max_size=len(tokens)))
    value, components = _score(content, tokens, lps, is_json=False)
    _check(value, components)
    for span in components.get("spans", []):
        assert 0 <= span["start"] < span["end"] <= len(content)
    i = data.draw(st.integers(0, len(tokens) - 1))
    raised = list(lps)
    raised[i] = 0.0
    assert _score(content, tokens, raised, is_json=False)[0] >= value


@PROPERTIES
@given(documents, st.data())
def test_self_reported_confidence_never_changes_the_score(doc, data):
    doc.pop("confidence", None)
    content = json.dumps(doc)
    boast = json.dumps({**doc, "confidence": 1.0})
    p = data.draw(st.floats(0.01, 1.0))
    plain = _score(content, [content], [math.log(p)], is_json=True)
    # Every token of the boasting answer is at least as sure as the plain one's.
    pieces = [boast[: len(content) - 1], boast[len(content) - 1:]]
    boasted = _score(boast, pieces, [math.log(p), 0.0], is_json=True)
    assert boasted[0] == plain[0]


@PROPERTIES
@given(st.text(max_size=60), st.lists(st.text(max_size=8), min_size=1, max_size=12), st.booleans())
def test_tokens_unrelated_to_the_content_never_crash(content, tokens, is_json):
    if is_json:
        content = json.dumps({"reply": content, "tone": "neutral"})
    value, components = _score(content, tokens, [math.log(0.5)] * len(tokens), is_json=is_json)
    _check(value, components)
