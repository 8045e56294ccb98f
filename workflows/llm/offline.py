"""The offline draft engine: no key, no network.

It lets `make run` show the whole loop on a laptop. It builds a draft from the form values
and, for JSON outputs, fills the schema with values derived from them. Its certainty is a
stated heuristic (how complete and how long the input is), never a model probability, and
the UI labels every offline draft as such.
"""
from __future__ import annotations

import json
import re
import time
from typing import Any

from ..definitions import WorkflowDefinition
from .prompts import RenderedPrompt, as_text
from .types import Completion

ENGINE = "offline"
MODEL = "offline-template-v1"
# Words that make a human look more likely to be needed; the heuristic lowers certainty.
# Whole words only: a substring test would hear "sue" in every "issue" a customer reports.
_RISK_WORDS = tuple(
    re.compile(rf"\b{word}\b")
    for word in (
        r"lawyers?", r"legal(?:ly)?", r"lawsuits?", r"fraud(?:ulent)?", r"injur(?:y|ies|ed)",
        r"urgent(?:ly)?", r"regulators?", r"su(?:e|ed|es|ing)",
    )
)


def _summary(values: dict[str, Any]) -> str:
    parts = [f"{k.replace('_', ' ')}: {as_text(v)}" for k, v in values.items() if v not in (None, "", [])]
    return "; ".join(parts)


def _fill(schema: dict[str, Any], key: str, values: dict[str, Any], prompt: RenderedPrompt) -> Any:
    kind = schema.get("type")
    if "enum" in schema:
        # Echo an option the submitter chose (severity "high" -> risk_rating "high") rather
        # than always the first one, so offline drafts do not contradict their input.
        given = {str(v) for v in values.values() if isinstance(v, (str, int))}
        return next((option for option in schema["enum"] if str(option) in given), schema["enum"][0])
    if kind == "object":
        props = schema.get("properties", {})
        return {name: _fill(sub, name, values, prompt) for name, sub in props.items()}
    if kind == "array":
        item = _fill(schema.get("items", {"type": "string"}), key, values, prompt)
        return [item]
    if kind in ("number", "integer"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    if key in values and values[key] not in (None, ""):
        return str(values[key])
    return f"[offline draft] {key.replace('_', ' ').capitalize()} based on {_summary(values)}"[:2000]


def _certainty(spec: WorkflowDefinition, values: dict[str, Any], prompt: RenderedPrompt) -> float:
    fields = spec.form.all_fields()
    filled = sum(1 for f in fields if values.get(f.name) not in (None, "", []))
    completeness = filled / len(fields) if fields else 1.0
    text = prompt.user.lower()
    risk = sum(bool(word.search(text)) for word in _RISK_WORDS)
    return round(max(0.05, min(0.99, 0.55 + 0.4 * completeness - 0.4 * risk)), 4)


def complete(spec: WorkflowDefinition, values: dict[str, Any], prompt: RenderedPrompt) -> Completion:
    started = time.monotonic()
    if spec.output.format == "json" and spec.output.json_schema:
        content = json.dumps(_fill(spec.output.json_schema, "draft", values, prompt), ensure_ascii=False)
    else:
        content = f"[offline draft] {_summary(values)}"
    words_in, words_out = len((prompt.system + prompt.user).split()), len(content.split())
    return Completion(
        engine=ENGINE,
        model=MODEL,
        content=content,
        token_logprobs=None,
        prompt_tokens=words_in,
        completion_tokens=words_out,
        latency_ms=int((time.monotonic() - started) * 1000),
        certainty_hint=_certainty(spec, values, prompt),
    )
