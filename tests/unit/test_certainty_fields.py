"""Certainty from the token probabilities of a JSON answer's values (pipeline/confidence.py).

Tokens are given explicitly as (text, probability) pairs, shaped like a real tokenizer's: keys
and punctuation in their own tokens, values split into word pieces.
"""
from __future__ import annotations

import json
import math

import pytest

from workflows.pipeline.confidence import LOW_CERTAINTY, align_tokens, score
from workflows.pipeline.types import EngineReply, TokenLogprob
from workflows.pipeline.validators import Validation

FORCED = 1e-13  # what a grammar-enforcing server reported for the letters of a key

REPLY_SCHEMA = {
    "type": "object",
    "required": ["reply", "tone"],
    "properties": {"reply": {"type": "string", "minLength": 1}, "tone": {"type": "string", "enum": ["apologetic", "neutral"]}},
}
MEMO_SCHEMA = {
    "type": "object",
    "required": ["recommendation", "rationale", "risks"],
    "properties": {
        "recommendation": {"type": "string", "enum": ["approve", "decline", "refer"]},
        "rationale": {"type": "string"},
        "risks": {"type": "array", "items": {"type": "string"}},
    },
}


def reply_of(pairs, content=None) -> EngineReply:
    tokens = tuple(TokenLogprob(t, math.log(p) if p > 0 else -math.inf) for t, p in pairs)
    text = "".join(t for t, _ in pairs) if content is None else content
    return EngineReply(engine="openai", model_requested="m", model_reported="m", content=text,
                       finish_reason="stop", token_logprobs=tokens, calls=())


def scored(pairs, schema, *, content=None, parsed=None, findings=(), **kwargs):
    reply = reply_of(pairs, content)
    if parsed is None:
        try:
            parsed = json.loads(reply.content)
        except ValueError:
            parsed = None
    validation = Validation(parsed=parsed, findings=list(findings))
    return score(reply, validation, json_schema=schema, **kwargs)


def customer_reply(*, key=FORCED, punct=FORCED, words=0.99, choice=0.98, continuation=1e-9, number=None):
    """{"reply":"We are sorry; a refund of 12 pounds is on its way.","tone":"apologetic"}"""
    pairs = [("{\"", punct), ("re", key), ("ply", key), ("\":\"", punct)]
    for piece in ["We", " are", " sorry", ";", " a", " refund", " of", " "]:
        pairs.append((piece, words))
    pairs.append(("12", words if number is None else number))
    for piece in [" pounds", " is", " on", " its", " way", "."]:
        pairs.append((piece, words))
    pairs += [("\",\"", punct), ("to", key), ("ne", key), ("\":\"", punct), ("apolog", choice),
              ("etic", continuation), ("\"}", punct)]
    return pairs


def test_forced_keys_and_punctuation_do_not_lower_the_score():
    value, components = scored(customer_reply(), REPLY_SCHEMA)
    assert components["alignment"] == "exact" and components["certainty_basis"] == "fields"
    assert value > 0.97, "the key letters at 1e-13 are not the model's judgement"
    assert components["fields"] == {"reply": 0.99, "tone": 0.98}
    assert components["low_fields"] == []
    assert components["min_token_prob"] == pytest.approx(0.98), "min over the values only"


def test_the_old_whole_answer_minimum_would_have_zeroed_it():
    pairs = customer_reply()
    probs = [p for _, p in pairs]
    old = 0.5 * sum(probs) / len(probs) + 0.5 * min(probs)
    assert old < 0.5
    assert scored(pairs, REPLY_SCHEMA)[0] > 0.97


def test_enum_continuation_tokens_are_ignored():
    sure = scored(customer_reply(continuation=0.999), REPLY_SCHEMA)[1]["fields"]["tone"]
    forced = scored(customer_reply(continuation=1e-12), REPLY_SCHEMA)[1]["fields"]["tone"]
    assert sure == forced == 0.98


def test_the_enum_choice_itself_counts():
    value, components = scored(customer_reply(choice=0.3), REPLY_SCHEMA)
    assert components["fields"]["tone"] == pytest.approx(0.3)
    assert components["low_fields"] == ["tone"]
    assert value < 0.6


def test_enum_members_sharing_a_prefix_count_every_token_where_they_part():
    schema = {"type": "object", "properties": {"decision": {"enum": ["approve", "approve_with_conditions", "decline"]}}}
    pairs = [("{\"", FORCED), ("decision", FORCED), ("\":\"", FORCED),
             ("approve", 0.9), ("_with", 0.6), ("_conditions", FORCED), ("\"}", FORCED)]
    _, components = scored(pairs, schema)
    assert components["fields"]["decision"] == pytest.approx(0.9 * 0.6, abs=1e-4)


def test_an_enum_of_one_member_is_no_evidence():
    schema = {"type": "object", "properties": {"kind": {"const": "memo"}, "text": {"type": "string"}}}
    pairs = [("{\"", 1), ("kind", FORCED), ("\":\"", 1), ("memo", FORCED), ("\",\"", 1), ("text", FORCED),
             ("\":\"", 1), ("Fine", 0.9), ("\"}", 1)]
    value, components = scored(pairs, schema)
    assert "kind" not in components["fields"]
    assert value == pytest.approx(0.9)


def test_a_value_outside_its_enum_is_scored_as_written():
    pairs = [("{\"", 1), ("tone", FORCED), ("\":\"", 1), ("fur", 0.5), ("ious", 0.5), ("\"}", 1)]
    _, components = scored(pairs, REPLY_SCHEMA, findings=["schema_invalid"])
    assert components["fields"]["tone"] == pytest.approx(0.5)


def test_booleans_and_null_count_only_their_first_token():
    schema = {"type": "object", "properties": {"collateral": {"type": "boolean"}, "note": {"type": ["string", "null"]}}}
    pairs = [("{\"", 1), ("collateral", FORCED), ("\":", 1), ("tr", 0.8), ("ue", FORCED), (",\"", 1),
             ("note", FORCED), ("\":", 1), ("n", 0.7), ("ull", FORCED), ("}", 1)]
    _, components = scored(pairs, schema)
    assert components["fields"] == {"collateral": 0.8, "note": 0.7}


def test_every_token_of_a_number_counts():
    schema = {"type": "object", "properties": {"amount": {"type": "number"}}}
    pairs = [("{\"", 1), ("amount", FORCED), ("\":", 1), ("125", 0.9), ("00", 0.3), ("}", 1)]
    _, components = scored(pairs, schema)
    assert components["fields"]["amount"] == pytest.approx(0.5 * 0.6 + 0.5 * (0.3 * 0.9 + 0.9 * 0.1))


def test_one_low_field_is_named_and_pulls_the_aggregate_below_0_6():
    pairs = [("{\"", FORCED), ("recommendation", FORCED), ("\":\"", FORCED), ("ref", 0.3), ("er", FORCED),
             ("\",\"", FORCED), ("rationale", FORCED), ("\":\"", FORCED)]
    pairs += [(w, 0.99) for w in ["Revenue", " covers", " the", " loan", " three", " times", "."]]
    pairs += [("\",\"", FORCED), ("risks", FORCED), ("\":[\"", FORCED), ("Thin", 0.99), (" margins", 0.99),
              ("\",\"", FORCED), ("Seasonal", 0.99), (" demand", 0.99), ("\"]}", FORCED)]
    value, components = scored(pairs, MEMO_SCHEMA)
    assert components["fields"] == {"recommendation": 0.3, "rationale": 0.99, "risks": 0.99}
    assert components["low_fields"] == ["recommendation"]
    assert value < 0.6
    assert value == pytest.approx(0.5 * (0.3 + 0.99 + 0.99) / 3 + 0.5 * 0.3, abs=1e-6)


def test_low_fields_are_listed_worst_first():
    pairs = [("{\"", 1), ("recommendation", FORCED), ("\":\"", 1), ("refer", 0.5), ("\",\"", 1),
             ("rationale", FORCED), ("\":\"", 1), ("Unclear", 0.2), ("\"}", 1)]
    _, components = scored(pairs, MEMO_SCHEMA)
    assert components["low_fields"] == ["rationale", "recommendation"]
    assert all(components["fields"][f] < LOW_CERTAINTY for f in components["low_fields"])


def test_an_array_field_is_its_weakest_item_and_items_are_kept():
    pairs = [("{\"", 1), ("risks", FORCED), ("\":[\"", 1), ("Thin", 0.99), (" margins", 0.99), ("\",\"", 1),
             ("Seasonal", 0.2), (" demand", 0.4), ("\"]}", 1)]
    _, components = scored(pairs, MEMO_SCHEMA)
    assert components["values"]["risks[0]"] == 0.99
    assert components["values"]["risks[1]"] < 0.4
    assert components["fields"]["risks"] == components["values"]["risks[1]"]
    assert components["field_spans"]["risks[1]"] == [{"start": 0, "end": 15, "p": 0.2}]


def test_nested_objects_have_dotted_paths():
    schema = {"type": "object", "properties": {"address": {"type": "object", "properties": {
        "city": {"type": "string"}, "country": {"$ref": "#/$defs/country"}}}},
        "$defs": {"country": {"enum": ["UK", "FR"]}}}
    pairs = [("{\"", 1), ("address", FORCED), ("\":{\"", 1), ("city", FORCED), ("\":\"", 1), ("Leeds", 0.6),
             ("\",\"", 1), ("country", FORCED), ("\":\"", 1), ("U", 0.95), ("K", FORCED), ("\"}}", 1)]
    _, components = scored(pairs, schema)
    assert components["values"] == {"address.city": 0.6, "address.country": 0.95}
    assert components["fields"] == {"address": 0.6}


def test_an_empty_array_counts_the_token_that_closed_it():
    pairs = [("{\"", 1), ("risks", FORCED), ("\":[", 1), ("]}", 0.4)]
    _, components = scored(pairs, MEMO_SCHEMA)
    assert components["fields"]["risks"] == 0.4


def test_a_single_incidental_token_in_a_long_value_cannot_zero_the_score():
    words = [" word"] * 40
    pairs = [("{\"", FORCED), ("reply", FORCED), ("\":\"", FORCED), ("Dear", 0.99)] + [(w, 0.99) for w in words]
    pairs[20] = (" whom", FORCED)  # one synonym the model hesitated over, at the forced level
    pairs += [(".\",\"", FORCED), ("tone", FORCED), ("\":\"", FORCED), ("neutral", 0.99), ("\"}", FORCED)]
    value, components = scored(pairs, REPLY_SCHEMA)
    assert value > 0.95
    assert components["min_token_prob"] < 1e-12, "it is still reported"
    assert components["field_spans"]["reply"][0]["p"] == 0.0


def test_more_than_a_tenth_of_unsure_tokens_does_lower_a_field():
    pairs = [("{\"", 1), ("reply", FORCED), ("\":\"", 1)] + [(" w", 0.99)] * 17 + [(" x", 0.2)] * 3 + [("\"}", 1)]
    _, components = scored(pairs, REPLY_SCHEMA)
    assert components["fields"]["reply"] < 0.7


@pytest.mark.parametrize("claim", ["1.0", "\"high\"", "100"])
def test_self_reported_confidence_is_ignored(claim):
    plain = [("{\"", 1), ("reply", FORCED), ("\":\"", 1), ("Sorry", 0.7), ("\",\"", 1), ("tone", FORCED),
             ("\":\"", 1), ("neutral", 0.7), ("\"", 1)]
    boast = plain + [(",\"", 1), ("confidence", FORCED), ("\":", 1), (claim, 0.999)]
    base, base_components = scored(plain + [("}", 1)], REPLY_SCHEMA)
    boasted, components = scored(boast + [("}", 1)], REPLY_SCHEMA)
    assert boasted == base == pytest.approx(0.7)
    assert components["fields"] == base_components["fields"]
    assert components["ignored_fields"] == ["confidence"]
    assert "confidence" not in components["fields"]


def test_extra_keys_count_when_the_schema_describes_them():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}}
    pairs = [("{\"", 1), ("a", FORCED), ("\":\"", 1), ("x", 0.9), ("\",\"", 1), ("b", FORCED), ("\":\"", 1),
             ("y", 0.4), ("\"}", 1)]
    _, components = scored(pairs, schema)
    assert components["fields"] == {"a": 0.9, "b": 0.4}


def test_without_a_schema_every_key_counts():
    pairs = [("{\"", 1), ("a", FORCED), ("\":\"", 1), ("x", 0.9), ("\"}", 1)]
    _, components = scored(pairs, None)
    assert components["fields"] == {"a": 0.9}


def test_escapes_inside_strings_map_spans_to_the_decoded_text():
    pairs = [("{\"", 1), ("reply", FORCED), ("\":\"", 1), ("Say", 0.99), (" \\\"", 0.99), ("maybe", 0.1),
             ("\\\"", 0.99), (" \\u00e9", 0.99), ("t\\u00e9", 0.99), ("\"}", 1)]
    reply = reply_of(pairs)
    parsed = json.loads(reply.content)
    assert parsed["reply"] == 'Say "maybe" été'
    _, components = scored(pairs, REPLY_SCHEMA)
    (span,) = components["field_spans"]["reply"]
    assert parsed["reply"][span["start"]:span["end"]] == "maybe"


def test_field_spans_follow_the_restored_values():
    """The model wrote a placeholder; the reviewer sees the real name: spans still fit."""
    pairs = [("{\"", 1), ("reply", FORCED), ("\":\"", 1), ("Dear", 0.99), (" <", 0.99), ("CUSTOMER", 0.99),
             ("_NAME", 0.99), (">,", 0.99), (" your", 0.99), (" 12", 0.1), (" pounds", 0.2), (" refund", 0.99),
             ("\"}", 1)]
    restored = {"reply": "Dear Ann Smith, your 12 pounds refund"}
    _, components = scored(pairs, REPLY_SCHEMA, parsed=restored)
    (span,) = components["field_spans"]["reply"]
    assert restored["reply"][span["start"]:span["end"]] == "12 pounds"


def test_at_most_ten_spans_are_kept_the_worst_ones():
    pairs = [("{\"", 1), ("reply", FORCED), ("\":\"", 1)]
    for i in range(30):
        pairs += [(f" ok{i}", 0.99), (f" bad{i}", 0.01 * (i + 1) if i < 20 else 0.45)]
    pairs.append(("\"}", 1))
    _, components = scored(pairs, REPLY_SCHEMA)
    spans = components["field_spans"]["reply"]
    assert len(spans) == 10
    assert max(s["p"] for s in spans) == pytest.approx(0.10)
    assert [s["start"] for s in spans] == sorted(s["start"] for s in spans)


# --- alignment -----------------------------------------------------------------------------


def test_tokens_that_drop_whitespace_align_on_the_other_characters():
    """The loopback fake server splits on spaces: the spaces are in no token."""
    content = json.dumps({"reply": "Dear Ann, thanks.", "tone": "apologetic"})
    pairs = [(t, 0.8) for t in content.split(" ")]
    value, components = scored(pairs, REPLY_SCHEMA, content=content)
    assert components["alignment"] == "whitespace"
    assert components["fields"] == {"reply": 0.8, "tone": 0.8}
    assert value == pytest.approx(0.8)


def test_byte_fragments_are_aligned_approximately_and_still_count():
    content = '{"reply":"Café ouvert, merci beaucoup pour votre patience.","tone":"neutral"}'
    pairs = [("{\"", 1), ("reply", FORCED), ("\":\"", 1), ("Caf", 0.99), ("bytes:\\xc3", 0.3), ("bytes:\\xa9", 0.3),
             (" ouvert", 0.99), (",", 0.99), (" merci", 0.99), (" beaucoup", 0.99), (" pour", 0.99),
             (" votre", 0.99), (" patience", 0.99), (".\",\"", 1), ("tone", FORCED), ("\":\"", 1),
             ("neutral", 0.99), ("\"}", 1)]
    value, components = scored(pairs, REPLY_SCHEMA, content=content)
    assert components["alignment"] == "approximate"
    assert components["fields"]["tone"] == 0.99
    assert components["fields"]["reply"] < 0.99, "the fragments of é count for the reply"
    assert 0.5 < value < 0.99


@pytest.mark.parametrize("pairs", [
    [("completely", 0.9), (" different", 0.9), (" text", 0.9)],
    [("{\"", 1)],
    [("", 0.9), ("", 0.9)],
])
def test_tokens_that_do_not_match_the_content_fall_back_to_the_whole_answer(pairs):
    content = json.dumps({"reply": "We are sorry.", "tone": "neutral"})
    value, components = scored(pairs, REPLY_SCHEMA, content=content)
    assert components["alignment"] == "fallback"
    assert components["certainty_basis"] == "whole_answer"
    assert "fields" not in components
    assert 0.0 <= value <= 1.0


def test_align_tokens_exact_and_whitespace():
    assert align_tokens(["ab", "c"], "abc") == ([(0, 2), (2, 3)], "exact")
    assert align_tokens(["a", " ", "b"], "a\n b") == ([(0, 1), None, (3, 4)], "whitespace")


def test_a_low_run_is_one_span_even_when_the_tokens_dropped_the_spaces():
    content = '{"reply":"Your refund of 12 pounds is on its way."}'
    pairs = [(t, 0.1 if t in ("12", "pounds") else 0.99) for t in content.split(" ")]
    _, components = scored(pairs, REPLY_SCHEMA, content=content)
    (span,) = components["field_spans"]["reply"]
    assert "Your refund of 12 pounds is on its way."[span["start"]:span["end"]] == "12 pounds"
