from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Completion:
    """What an engine returns: the text plus the facts we store and score."""

    engine: str
    model: str
    content: str
    token_logprobs: list[float] | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    certainty_hint: float | None = None  # offline engine only: its own heuristic certainty
    errors: list[str] = field(default_factory=list)  # failed attempts before this one


class EngineError(Exception):
    """Every configured model failed; the message says why, per model."""
