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

from ...vocab import CallOutcome
from ..prompts import as_text
from ..types import CallRecord, EngineReply, ModelRequest
from . import log_call

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


def _fill(schema: dict[str, Any], key: str, values: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if "enum" in schema:
        # Echo an option the submitter chose (severity "high" -> risk_rating "high") rather
        # than always the first one, so offline drafts do not contradict their input.
        given = {str(v) for v in values.values() if isinstance(v, (str, int))}
        return next((option for option in schema["enum"] if str(option) in given), schema["enum"][0])
    if kind == "object":
        props = schema.get("properties", {})
        return {name: _fill(sub, name, values) for name, sub in props.items()}
    if kind == "array":
        item = _fill(schema.get("items", {"type": "string"}), key, values)
        return [item]
    if kind in ("number", "integer"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    if key in values and values[key] not in (None, ""):
        return str(values[key])
    return f"[offline draft] {key.replace('_', ' ').capitalize()} based on {_summary(values)}"[:2000]


# When a page is watching, the offline draft is written out a few words at a time, as a model
# would, so the demo shows the draft appearing (a run without a watcher pays nothing for it).
STREAM_WORDS_PER_PIECE = 3
STREAM_PIECE_SECONDS = 0.08
_PIECE = re.compile(r"\S+\s*|\s+")


def _write_in_pieces(sink, content: str) -> None:
    sink.start()
    words = _PIECE.findall(content)
    for index in range(0, len(words), STREAM_WORDS_PER_PIECE):
        sink.write("".join(words[index:index + STREAM_WORDS_PER_PIECE]))
        time.sleep(STREAM_PIECE_SECONDS)


def _certainty(values: dict[str, Any], field_names: tuple[str, ...], text: str) -> float:
    filled = sum(1 for name in field_names if values.get(name) not in (None, "", []))
    completeness = filled / len(field_names) if field_names else 1.0
    risk = sum(bool(word.search(text.lower())) for word in _RISK_WORDS)
    return round(max(0.05, min(0.99, 0.55 + 0.4 * completeness - 0.4 * risk)), 4)


class OfflineEngine:
    """Drafts from the form values; needs no key and no network."""

    name = ENGINE

    def complete(self, request: ModelRequest) -> EngineReply:
        started = time.monotonic()
        values = dict(request.values)
        if request.json_schema:
            content = json.dumps(_fill(request.json_schema, "draft", values), ensure_ascii=False)
        else:
            content = f"[offline draft] {_summary(values)}"
        if request.text_sink is not None:
            _write_in_pieces(request.text_sink, content)
        words_in, words_out = len((request.system + request.user).split()), len(content.split())
        call = CallRecord(
            purpose=request.purpose,
            engine=ENGINE,
            model_requested=request.model,
            model_reported=MODEL,
            outcome=CallOutcome.OK,
            prompt_tokens=words_in,
            completion_tokens=words_out,
            latency_ms=int((time.monotonic() - started) * 1000),
        )
        log_call(call)
        return EngineReply(
            engine=ENGINE,
            model_requested=request.model,
            model_reported=MODEL,
            content=content,
            finish_reason="stop",
            token_logprobs=None,
            calls=(call,),
            certainty_hint=_certainty(values, request.field_names, request.user),
        )
