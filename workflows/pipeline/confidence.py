"""The confidence score (DESIGN.md section 4).

The score is always stored with its components so a reviewer or auditor can see why a draft
took its lane. Nothing in the output itself (a "confidence" key the model writes) is read, and
keys the workflow's schema does not declare carry no weight.

Certainty comes from the token probabilities of the answer's *values*. JSON punctuation, keys
and the continuation of an enum value are forced by the format (a server that enforces the
schema by grammar still reports their unconstrained probabilities, 1e-13 for a key's letters),
so they are not the model's judgement and are left out:

* each token is mapped to the characters it produced in the answer;
* a small scanner finds every leaf value of a JSON answer (its path, e.g. ``risks[0]``, and
  its characters: for a string, those inside the quotes);
* a free value (string, number) is worth ``0.5 * mean + 0.5 * q10`` of its tokens'
  probabilities, q10 being the 10th percentile, so one incidental token (a synonym the model
  hesitated over) moves it a little and a tenth of unsure tokens moves it a lot;
* a choice (an enum member, true/false/null) is worth the probability of the tokens at which
  the allowed candidates still differ: the first token of "apologetic" is the choice between
  "apologetic" and "neutral", the rest is forced; an enum of one member is no evidence at all;
* a field (top-level key) is worth its weakest value; the answer is worth
  ``0.5 * mean(fields) + 0.5 * min(fields)``.

A text answer is worth ``0.5 * mean + 0.5 * q10`` of all its tokens, and the runs of tokens
below ``LOW_TOKEN_PROB`` are kept as spans for the reviewer. Without logprobs, agreement between
two samples, the QA grade or the offline engine's heuristic supplies the certainty (in that
order); a QA grade or an agreement given beside a better source can only lower it.
"""
from __future__ import annotations

import bisect
import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..vocab import NOT_FAULTS
from .types import EngineReply
from .validators import Validation

# A hard validator failure caps the score so it can never be auto-approved on certainty alone.
_FAILURE_CAP = 0.3
# No signal at all lands in the middle, never at the top.
_NO_SIGNAL = 0.5
# A field (or list item) below this is named to the reviewer as one the model was less sure of.
LOW_CERTAINTY = 0.7
# A run of tokens below this is a span the reviewer sees highlighted.
LOW_TOKEN_PROB = 0.5
MAX_SPANS = 10
_QUANTILE = 0.10
# Bigger answers are not worth an approximate (quadratic-ish) alignment: whole-answer statistics.
_MAX_APPROXIMATE_CHARS = 60_000
_MAX_DEPTH = 200

ROOT = "(root)"

SOURCES = ("logprobs", "agreement", "qa", "offline_heuristic", "none")


# --- public API ----------------------------------------------------------------------------


def score(
    reply: EngineReply,
    validation: Validation,
    *,
    json_schema: Mapping[str, Any] | None = None,
    content: str | None = None,
    qa_grade: float | None = None,
    agreement: float | Mapping[str, float] | None = None,
) -> tuple[float, dict[str, Any]]:
    """Return (score in [0, 1], JSON-serialisable components).

    ``json_schema``: the workflow's output schema for a JSON answer (None for text): it names
    the enum fields whose continuation is forced and the declared fields that count.
    ``content``: the answer as the reviewer sees it (after PII restore); text spans are given
    in its offsets (``reply.content``'s when omitted). JSON field spans are given in the offsets
    of the strings in ``validation.parsed``.
    ``qa_grade``: a grading call's verdict in [0, 1]. ``agreement``: agreement in [0, 1] between
    two samples, or per field (see ``agreement_by_field``). Beside a better source each can only
    lower the certainty.
    """
    components: dict[str, Any] = {}
    is_json = json_schema is not None or validation.parsed is not None
    secondary: dict[str, float] = {}
    if qa_grade is not None:
        secondary["qa"] = _unit(qa_grade)
        components["qa_grade"] = round(secondary["qa"], 6)
    agreement_fields: dict[str, float] = {}
    if isinstance(agreement, Mapping):
        agreement_fields = {str(k): _unit(v) for k, v in agreement.items()}
        if is_json and validation.parsed is not None:
            declared = _declared_fields(json_schema, list(agreement_fields))
            agreement_fields = {k: v for k, v in agreement_fields.items() if k in declared}
        if agreement_fields:
            secondary["agreement"] = _aggregate(list(agreement_fields.values()))
    elif agreement is not None:
        secondary["agreement"] = _unit(agreement)
    if "agreement" in secondary:
        components["agreement"] = round(secondary["agreement"], 6)
    if agreement_fields:
        components["agreement_fields"] = {k: round(v, 6) for k, v in agreement_fields.items()}

    if reply.token_logprobs:
        primary = _from_logprobs(reply, validation, json_schema, content, is_json, components)
        source = "logprobs"
    elif "agreement" in secondary:
        primary, source = secondary["agreement"], "agreement"
        if agreement_fields:
            _set_fields(components, agreement_fields)
    elif "qa" in secondary:
        primary, source = secondary["qa"], "qa"
    elif reply.certainty_hint is not None:
        primary, source = _unit(reply.certainty_hint), "offline_heuristic"
    else:
        # A provider without logprobs gives us nothing to trust: land in the middle, not the top.
        primary, source = _NO_SIGNAL, "none"
    certainty = primary
    for name, value in secondary.items():
        if value < certainty:
            certainty = value
            components["certainty_limited_by"] = name
    components["certainty_source"] = source
    components["certainty"] = round(certainty, 6)
    components["validators_passed"] = not validation.findings
    components["findings"] = list(validation.findings)
    faults = set(validation.findings) - NOT_FAULTS
    value = certainty if not faults else min(certainty, _FAILURE_CAP)
    value = round(max(0.0, min(1.0, value)), 6)
    return value, components


def certainty_from_logprobs(logprobs: Sequence[float]) -> dict[str, float]:
    """Whole-answer statistics of a list of token logprobs (for display and the fallback)."""
    probs = [_prob(lp) for lp in logprobs]
    return {
        "mean_token_prob": round(sum(probs) / len(probs), 6),
        "min_token_prob": round(min(probs), 6),
        "certainty": round(value_certainty(probs), 6),
    }


def value_certainty(probs: Sequence[float]) -> float:
    """A free value's (or a text answer's) certainty: 0.5 * mean + 0.5 * 10th percentile."""
    ordered = sorted(probs)
    return 0.5 * (sum(ordered) / len(ordered)) + 0.5 * _quantile(ordered, _QUANTILE)


def aggregate(certainties: Sequence[float]) -> float:
    """Fields to one certainty: 0.5 * mean + 0.5 * min (the weakest field counts for half)."""
    return _aggregate(list(certainties))


def agreement_by_field(a: Any, b: Any, *, json_schema: Mapping[str, Any] | None = None) -> dict[str, float]:
    """How far two samples of the same request agree, per top-level field, in [0, 1].

    Strings agree when equal after normalising case, spacing and end punctuation; short ones
    (three words or fewer: a label, a name, an amount in words) otherwise disagree, longer ones
    count their common words in order. Numbers, booleans and null must be equal. Lists are
    matched item to item (best pairs first, order free), objects key by key; a missing field
    disagrees. Two answers that are not both objects give one entry, ``(root)``. Keys the schema
    does not declare are left out (a shared "confidence": 1 is not agreement about the answer).
    """
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(dict.fromkeys([*a, *b]))
        declared = _declared_fields(json_schema, keys)
        return {k: _similar(a.get(k, _MISSING), b.get(k, _MISSING)) for k in keys if k in declared}
    return {ROOT: _similar(a, b)}


def agreement(a: Any, b: Any, *, json_schema: Mapping[str, Any] | None = None) -> float:
    """One number for ``agreement_by_field`` (aggregated like certainties: mean and min)."""
    fields = agreement_by_field(a, b, json_schema=json_schema)
    return _aggregate(list(fields.values())) if fields else 1.0


def field_path(path: Sequence[str | int]) -> str:
    """A value's path as shown and stored: ``reply``, ``risks[0]``, ``address.city``,
    ``["odd key"]``; the top-level key alone is the field's name."""
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        elif not out:
            out = step
        elif _IDENT.fullmatch(step):
            out += "." + step
        else:
            out += "[" + json.dumps(step, ensure_ascii=False) + "]"
    return out if path else ROOT


# --- logprobs ------------------------------------------------------------------------------


def _from_logprobs(reply, validation, json_schema, display, is_json, components) -> float:
    tokens = reply.token_logprobs
    probs = [_prob(t.logprob) for t in tokens]
    spans, alignment = align_tokens([t.token for t in tokens], reply.content)
    components["alignment"] = alignment
    if is_json:
        leaves = _scan(reply.content) if alignment != "fallback" else None
        if leaves is not None:
            certainty = _json_certainty(reply.content, leaves, spans, probs, json_schema, validation, components)
            if certainty is not None:
                return certainty
        components["certainty_basis"] = "whole_answer"
        _token_stats(components, probs)
        return value_certainty(probs)
    components["certainty_basis"] = "text"
    _token_stats(components, probs)
    if alignment != "fallback":
        components["spans"] = _text_spans(reply.content, display, spans, probs)
    return value_certainty(probs)


def _json_certainty(raw, leaves, spans, probs, json_schema, validation, components) -> float | None:
    index = _TokenIndex(spans)
    top_keys = list(dict.fromkeys(leaf.path[0] for leaf in leaves if leaf.path and isinstance(leaf.path[0], str)))
    declared = _declared_fields(json_schema, top_keys)
    ignored: list[str] = []
    leaf_values: dict[tuple, float] = {}
    evidence: set[int] = set()
    field_spans: list[tuple[float, str, dict]] = []
    for leaf in leaves:
        if leaf.path and isinstance(leaf.path[0], str) and leaf.path[0] not in declared:
            if leaf.path[0] not in ignored:
                ignored.append(leaf.path[0])
            continue
        used, certainty, free = _leaf_certainty(raw, leaf, index, probs, json_schema)
        if certainty is None:
            continue
        evidence.update(used)
        leaf_values[leaf.path] = min(certainty, leaf_values.get(leaf.path, 1.0))
        if free and leaf.kind == "string":
            field_spans.extend(_string_spans(leaf, used, spans, probs, validation.parsed))
    if ignored:
        components["ignored_fields"] = ignored
    if not leaf_values:
        return None
    fields: dict[str, float] = {}
    nested: dict[str, float] = {}
    for path, certainty in leaf_values.items():
        name = path[0] if path and isinstance(path[0], str) else ROOT
        fields[name] = min(certainty, fields.get(name, 1.0))
        # Every node below a field (list items, nested objects) for the reviewer's view.
        for depth in range(2 if name != ROOT else 1, len(path) + 1):
            key = field_path(path[:depth])
            nested[key] = min(certainty, nested.get(key, 1.0))
    components["certainty_basis"] = "fields"
    _set_fields(components, fields)
    if nested:
        components["values"] = {k: round(v, 4) for k, v in nested.items()}
    if field_spans:
        worst = sorted(field_spans, key=lambda item: item[0])[:MAX_SPANS]
        grouped: dict[str, list[dict]] = {}
        for _, path, span in sorted(worst, key=lambda item: (item[1], item[2]["start"])):
            grouped.setdefault(path, []).append(span)
        components["field_spans"] = grouped
    _token_stats(components, [probs[i] for i in sorted(evidence)])
    components["value_tokens"] = len(evidence)
    return _aggregate(list(fields.values()))


def _leaf_certainty(raw, leaf, index, probs, json_schema) -> tuple[list[int], float | None, bool]:
    """(the tokens that count, the value's certainty or None for no evidence, whether the
    value was written freely rather than chosen from candidates)."""
    if leaf.kind == "empty" or (leaf.kind == "string" and leaf.end == leaf.start):
        # An empty string / list / object: the token that closed it is the decision.
        start, end = (leaf.start - 1, leaf.end + 1) if leaf.kind == "string" else (leaf.start, leaf.end)
        used = index.overlapping(start, end)[-1:]
        return used, (probs[used[0]] if used else None), False
    used = index.overlapping(leaf.start, leaf.end)
    if not used:
        return [], None, False
    text = raw[leaf.start:leaf.end]
    candidates = _candidates(json_schema, leaf)
    if candidates is not None and text in candidates:
        choice = []
        for i in used:
            a = max(index.starts[i], leaf.start) - leaf.start
            b = min(index.ends[i], leaf.end) - leaf.start
            remaining = [c for c in candidates if c[:a] == text[:a]]
            if len(remaining) > 1 and any(c[a:b] != text[a:b] for c in remaining):
                choice.append(i)
        if not choice:
            return [], None, False  # forced all the way (an enum of one member, a const)
        return choice, math.prod(probs[i] for i in choice), False
    return used, value_certainty([probs[i] for i in used]), True


def _candidates(json_schema, leaf) -> list[str] | None:
    node = _subschema(json_schema, leaf.path) if json_schema is not None else None
    members = _enum_members(node, json_schema) if node is not None else None
    if members is not None:
        if leaf.kind == "string":
            return [json.dumps(m, ensure_ascii=False)[1:-1] for m in members if isinstance(m, str)]
        return [json.dumps(m) for m in members if not isinstance(m, (str, list, dict))]
    if leaf.kind == "literal":
        return ["true", "false", "null"]
    return None


# --- tokens to characters ----------------------------------------------------------------


def align_tokens(tokens: Sequence[str], content: str) -> tuple[list[tuple[int, int] | None], str]:
    """Each token's [start, end) in ``content`` (None: it produced no visible character) and how
    they were found: "exact" (the tokens concatenate to the content), "whitespace" (they do
    once whitespace is ignored), "approximate" (most characters match; unmatched tokens take the
    gap between their neighbours) or "fallback" (no trustworthy alignment)."""
    joined = "".join(tokens)
    if joined == content:
        spans, pos = [], 0
        for t in tokens:
            spans.append((pos, pos + len(t)))
            pos += len(t)
        return spans, "exact"
    content_chars = [i for i, c in enumerate(content) if not c.isspace()]
    if "".join(content[i] for i in content_chars) == "".join(c for c in joined if not c.isspace()):
        spans, k = [], 0
        for t in tokens:
            n = sum(1 for c in t if not c.isspace())
            spans.append((content_chars[k], content_chars[k + n - 1] + 1) if n else None)
            k += n
        return spans, "whitespace"
    if not joined or not content or max(len(joined), len(content)) > _MAX_APPROXIMATE_CHARS:
        return [None] * len(tokens), "fallback"
    matcher = difflib.SequenceMatcher(None, joined, content, autojunk=False)
    blocks = matcher.get_matching_blocks()
    matched = sum(b.size for b in blocks)
    if matched < 0.9 * len(content) or matched < 0.75 * len(joined):
        return [None] * len(tokens), "fallback"
    to_content: list[int | None] = [None] * len(joined)
    for b in blocks:
        for k in range(b.size):
            to_content[b.a + k] = b.b + k
    mapped: list[tuple[int, int] | None] = []
    pos = 0
    for t in tokens:
        hits = [to_content[i] for i in range(pos, pos + len(t)) if to_content[i] is not None]
        mapped.append((min(hits), max(hits) + 1) if hits else None)
        pos += len(t)
    # A token none of whose characters matched (a byte fragment of a character, a differently
    # escaped piece) takes the gap between its neighbours, so it still counts for its value.
    spans = list(mapped)
    for i, span in enumerate(mapped):
        if span is None:
            before = next((s[1] for s in reversed(mapped[:i]) if s is not None), 0)
            after = next((s[0] for s in mapped[i + 1:] if s is not None), len(content))
            spans[i] = (before, after) if after > before else (max(before - 1, 0), max(before, 1))
    return spans, "approximate"


class _TokenIndex:
    def __init__(self, spans):
        self.ids = [i for i, s in enumerate(spans) if s is not None and s[1] > s[0]]
        self.starts = {i: spans[i][0] for i in self.ids}
        self.ends = {i: spans[i][1] for i in self.ids}
        self._start_list = [spans[i][0] for i in self.ids]

    def overlapping(self, start: int, end: int) -> list[int]:
        """Tokens sharing at least one character with [start, end), in order."""
        hi = bisect.bisect_left(self._start_list, end)
        return [i for i in self.ids[:hi] if self.ends[i] > start]


# --- spans -------------------------------------------------------------------------------


def _low_runs(items: list[tuple[int, int, float]], text: str) -> list[tuple[int, int, float]]:
    """Runs of consecutive low-probability pieces of ``text``: (start, end, lowest probability).
    Pieces apart only by whitespace no token covers (tokens that dropped it) are one run."""
    runs: list[tuple[int, int, float]] = []
    current: list[int | float] | None = None
    for start, end, p in sorted(items):
        if end <= start:
            continue
        if p < LOW_TOKEN_PROB:
            if current is not None and (start <= current[1] or text[current[1]:start].isspace()):
                current[1] = max(current[1], end)
                current[2] = min(current[2], p)
            else:
                if current is not None:
                    runs.append(tuple(current))
                current = [start, end, p]
        elif current is not None:
            runs.append(tuple(current))
            current = None
    if current is not None:
        runs.append(tuple(current))
    return runs


def _finish_spans(runs, text: str, mapper) -> list[dict]:
    out = []
    for start, end, p in sorted(runs, key=lambda r: r[2])[:MAX_SPANS]:
        start, end = mapper(start, end)
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            out.append({"start": start, "end": end, "p": round(p, 4)})
    out.sort(key=lambda s: s["start"])
    merged: list[dict] = []
    for span in out:  # mapping can make neighbours touch or overlap
        if merged and span["start"] <= merged[-1]["end"]:
            merged[-1]["end"] = max(merged[-1]["end"], span["end"])
            merged[-1]["p"] = min(merged[-1]["p"], span["p"])
        else:
            merged.append(span)
    return merged


def _text_spans(raw: str, display: str | None, spans, probs) -> list[dict]:
    runs = _low_runs([(s[0], s[1], probs[i]) for i, s in enumerate(spans) if s is not None], raw)
    target = raw if display is None else display
    return _finish_spans(runs, target, _offset_mapper(raw, target))


def _string_spans(leaf, used, spans, probs, parsed) -> list[tuple[float, str, dict]]:
    """Low spans inside one JSON string, in the offsets of its value in ``parsed``."""
    pieces = []
    for i in used:
        a, b = max(spans[i][0], leaf.start), min(spans[i][1], leaf.end)
        da, db = bisect.bisect_left(leaf.raw_index, a), bisect.bisect_left(leaf.raw_index, b)
        pieces.append((da, db, probs[i]))
    runs = _low_runs(pieces, leaf.decoded)
    if not runs:
        return []
    shown = _value_at(parsed, leaf.path)
    target = shown if isinstance(shown, str) else leaf.decoded
    path = field_path(leaf.path)
    return [(s["p"], path, s) for s in _finish_spans(runs, target, _offset_mapper(leaf.decoded, target))]


def _offset_mapper(source: str, target: str):
    """Map [start, end) in ``source`` to ``target`` (e.g. the answer before and after PII
    restore): through equal stretches exactly, a changed stretch as a whole."""
    if source == target:
        return lambda start, end: (start, end)
    if max(len(source), len(target)) > _MAX_APPROXIMATE_CHARS:
        return lambda start, end: (0, 0)
    opcodes = difflib.SequenceMatcher(None, source, target, autojunk=False).get_opcodes()
    starts = [op[1] for op in opcodes]

    def point(pos: int, *, is_end: bool) -> int:
        # A start lies in the stretch that begins at or before it, an end in the one that
        # begins before it (so an end on a boundary closes the stretch it ends).
        k = (bisect.bisect_left(starts, pos) if is_end else bisect.bisect_right(starts, pos)) - 1
        if k < 0:
            return 0
        tag, i1, _, j1, j2 = opcodes[k]
        if tag == "equal":
            return j1 + min(pos - i1, j2 - j1)
        return j2 if is_end else j1

    return lambda start, end: (point(start, is_end=False), point(end, is_end=True))


# --- the JSON scanner ----------------------------------------------------------------------


@dataclass
class _Leaf:
    path: tuple
    kind: str  # "string" | "number" | "literal" | "empty"
    start: int  # a string's characters inside the quotes; a number or literal; an empty [] / {}
    end: int
    decoded: str = ""
    raw_index: tuple[int, ...] = ()  # a string's decoded character k starts at raw_index[k]


class _NotJson(Exception):
    pass


_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _scan(text: str) -> list[_Leaf] | None:
    """Every leaf value of a JSON document with its path and characters; None if not JSON."""
    scanner = _Scanner(text)
    try:
        scanner.value((), 0)
        scanner.skip_ws()
        if scanner.i != len(text):
            raise _NotJson
    except (_NotJson, IndexError):
        return None
    return scanner.leaves


class _Scanner:
    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self.leaves: list[_Leaf] = []

    def skip_ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t\n\r":
            self.i += 1

    def value(self, path: tuple, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise _NotJson
        self.skip_ws()
        c = self.s[self.i]
        if c == "{":
            self.container(path, depth, "}", keyed=True)
        elif c == "[":
            self.container(path, depth, "]", keyed=False)
        elif c == '"':
            start = self.i + 1
            decoded, index = self.string()
            self.leaves.append(_Leaf(path, "string", start, self.i - 1, decoded, index))
        elif match := _NUMBER.match(self.s, self.i):
            self.leaves.append(_Leaf(path, "number", self.i, match.end()))
            self.i = match.end()
        else:
            for literal in ("true", "false", "null"):
                if self.s.startswith(literal, self.i):
                    self.leaves.append(_Leaf(path, "literal", self.i, self.i + len(literal)))
                    self.i += len(literal)
                    return
            raise _NotJson

    def container(self, path: tuple, depth: int, close: str, *, keyed: bool) -> None:
        start = self.i
        self.i += 1
        self.skip_ws()
        if self.s[self.i] == close:
            self.i += 1
            self.leaves.append(_Leaf(path, "empty", start, self.i))
            return
        n = 0
        while True:
            if keyed:
                self.skip_ws()
                if self.s[self.i] != '"':
                    raise _NotJson
                key, _ = self.string()
                self.skip_ws()
                if self.s[self.i] != ":":
                    raise _NotJson
                self.i += 1
                self.value((*path, key), depth + 1)
            else:
                self.value((*path, n), depth + 1)
            n += 1
            self.skip_ws()
            c = self.s[self.i]
            self.i += 1
            if c == close:
                return
            if c != ",":
                raise _NotJson

    def string(self) -> tuple[str, tuple[int, ...]]:
        s = self.s
        self.i += 1  # the opening quote
        chars: list[str] = []
        index: list[int] = []
        while True:
            c = s[self.i]
            if c == '"':
                self.i += 1
                return "".join(chars), tuple(index)
            index.append(self.i)
            if c != "\\":
                chars.append(c)
                self.i += 1
                continue
            e = s[self.i + 1]
            if e in _ESCAPES:
                chars.append(_ESCAPES[e])
                self.i += 2
            elif e == "u":
                code = self._hex4(self.i + 2)
                self.i += 6
                if 0xD800 <= code < 0xDC00 and s.startswith("\\u", self.i):
                    low = self._hex4(self.i + 2)
                    if 0xDC00 <= low < 0xE000:
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        self.i += 6
                chars.append(chr(code) if not 0xD800 <= code < 0xE000 else "\ufffd")
            else:
                raise _NotJson

    def _hex4(self, at: int) -> int:
        digits = self.s[at:at + 4]
        if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise _NotJson
        return int(digits, 16)


# --- the schema ---------------------------------------------------------------------------


def _resolve(node: Any, root: Any) -> Any:
    for _ in range(16):
        if not (isinstance(node, Mapping) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#")):
            return node
        target: Any = root
        for part in node["$ref"][1:].split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, Mapping) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                return None
        node = target
    return None


def _subschema(root: Any, path: tuple) -> Any:
    node = _resolve(root, root)
    for step in path:
        if not isinstance(node, Mapping):
            return None
        if isinstance(step, str):
            properties = node.get("properties")
            if isinstance(properties, Mapping) and step in properties:
                node = properties[step]
            elif isinstance(node.get("additionalProperties"), Mapping):
                node = node["additionalProperties"]
            else:
                return None
        else:
            prefix = node.get("prefixItems")
            if isinstance(prefix, list) and step < len(prefix):
                node = prefix[step]
            elif isinstance(node.get("items"), Mapping):
                node = node["items"]
            else:
                return None
        node = _resolve(node, root)
    return node


def _enum_members(node: Any, root: Any) -> list[Any] | None:
    """The values a schema node allows, if it lists them (enum, const, or a union of those)."""
    node = _resolve(node, root)
    if not isinstance(node, Mapping):
        return None
    if "const" in node:
        return [node["const"]]
    if isinstance(node.get("enum"), list):
        return list(node["enum"])
    for key in ("anyOf", "oneOf"):
        branches = node.get(key)
        if isinstance(branches, list) and branches:
            members: list[Any] = []
            for branch in branches:
                found = _enum_members(branch, root)
                if found is None:
                    return None
                members.extend(found)
            return members
    return None


def _declared_fields(json_schema: Mapping[str, Any] | None, keys: Sequence[str]) -> set[str]:
    """The top-level keys that are part of the answer: those the schema declares, or every key
    when the schema lists none or describes extra keys (``additionalProperties`` a schema)."""
    root = _resolve(json_schema, json_schema) if json_schema is not None else None
    if not isinstance(root, Mapping) or not isinstance(root.get("properties"), Mapping):
        return set(keys)
    if isinstance(root.get("additionalProperties"), Mapping):
        return set(keys)
    return {k for k in keys if k in root["properties"]}


# --- agreement -----------------------------------------------------------------------------

_MISSING = object()
_SHORT_WORDS = 3
_MAX_ITEMS = 200


def _normal(text: str) -> str:
    return " ".join(text.casefold().split()).strip(" .,;:!?")


def _similar(a: Any, b: Any) -> float:
    if a is _MISSING or b is _MISSING:
        return 1.0 if a is b else 0.0
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return 1.0 if a is b or (type(a) is type(b) and a == b) else 0.0
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return 1.0 if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) else 0.0
    if isinstance(a, str) and isinstance(b, str):
        x, y = _normal(a), _normal(b)
        if x == y:
            return 1.0
        wx, wy = x.split(), y.split()
        if min(len(wx), len(wy)) <= _SHORT_WORDS:
            return 0.0
        return difflib.SequenceMatcher(None, wx, wy, autojunk=False).ratio()
    if isinstance(a, list) and isinstance(b, list):
        if not a and not b:
            return 1.0
        a, b = a[:_MAX_ITEMS], b[:_MAX_ITEMS]
        pairs = sorted(((_similar(x, y), i, j) for i, x in enumerate(a) for j, y in enumerate(b)), reverse=True)
        used_a: set[int] = set()
        used_b: set[int] = set()
        total = 0.0
        for s, i, j in pairs:
            if i not in used_a and j not in used_b:
                used_a.add(i)
                used_b.add(j)
                total += s
        return total / max(len(a), len(b))
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(dict.fromkeys([*a, *b]))
        if not keys:
            return 1.0
        return sum(_similar(a.get(k, _MISSING), b.get(k, _MISSING)) for k in keys) / len(keys)
    return 0.0


# --- small helpers -------------------------------------------------------------------------


def _prob(logprob: float) -> float:
    """A token's probability; a logprob the server got wrong (NaN, > 0) is clamped to [0, 1]."""
    if math.isnan(logprob):  # nothing to trust
        return 0.0
    return min(1.0, math.exp(min(logprob, 0.0)))


def _unit(value: float) -> float:
    value = float(value)
    return 0.0 if math.isnan(value) else max(0.0, min(1.0, value))


def _quantile(ordered: Sequence[float], q: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    k = int(pos)
    frac = pos - k
    # lo * (1 - f) + hi * f rather than lo + (hi - lo) * f: monotone in both, also in floats.
    return ordered[k] * (1 - frac) + ordered[min(k + 1, len(ordered) - 1)] * frac


def _aggregate(values: list[float]) -> float:
    return 0.5 * (sum(values) / len(values)) + 0.5 * min(values)


def _set_fields(components: dict[str, Any], fields: dict[str, float]) -> None:
    components["fields"] = {k: round(v, 4) for k, v in fields.items()}
    low = sorted((v, k) for k, v in fields.items() if v < LOW_CERTAINTY)
    components["low_fields"] = [k for _, k in low]


def _token_stats(components: dict[str, Any], probs: list[float]) -> None:
    if probs:
        components["mean_token_prob"] = round(sum(probs) / len(probs), 6)
        components["min_token_prob"] = round(min(probs), 6)


def _value_at(document: Any, path: tuple) -> Any:
    for step in path:
        found = (isinstance(step, str) and isinstance(document, dict) and step in document) or (
            isinstance(step, int) and isinstance(document, list) and step < len(document))
        if not found:
            return None
        document = document[step]
    return document
