"""Pipeline results for tests of what happens after the pipeline (persisting, routing, review).

Those tests choose the lane themselves, as the old hand-made completions did: a
``ScriptedEngine`` answers in-process with fixed content and token probabilities, and the
real ``pipeline.run`` (redaction, validation, scoring) turns it into a DraftResult. Tests of
the model boundary itself use the loopback OpenAI-compatible server instead (fake_openai.py).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from workflows.pipeline import run
from workflows.pipeline.types import CallRecord, EngineReply, ModelRequest, TokenLogprob
from workflows.vocab import CallOutcome


@dataclass
class ScriptedEngine:
    content: str
    probability: float
    model: str = "gpt-4o-mini"
    name: str = "openai"

    def complete(self, request: ModelRequest) -> EngineReply:
        tokens = tokens_of(self.content)
        call = CallRecord(
            purpose=request.purpose, engine=self.name, model_requested=request.model, model_reported=self.model,
            outcome=CallOutcome.OK, prompt_tokens=40, completion_tokens=len(tokens), latency_ms=12,
        )
        logprob = math.log(self.probability)
        return EngineReply(
            engine=self.name, model_requested=request.model, model_reported=self.model, content=self.content,
            finish_reason="stop", token_logprobs=tuple(TokenLogprob(t, logprob) for t in tokens), calls=(call,),
        )


def tokens_of(content: str) -> list[str]:
    """Word-sized pieces whose concatenation is the content, as a real tokenizer's would be."""
    pieces, current = [], ""
    for char in content:
        current += char
        if char in ' ,:{}[]"':
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces


def scripted_result(spec, values, *, probability: float, content: str | dict, model: str = "gpt-4o-mini"):
    text = content if isinstance(content, str) else json.dumps(content)
    return run(spec, values, engine=ScriptedEngine(text, probability, model))
