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
    failures: list["ModelFailure"] = field(default_factory=list)  # models tried before this one
    redacted_fields: list[str] = field(default_factory=list)  # pii fields the model never saw
    # Findings made before validation (code -> detail), e.g. by PII restoration in generation.
    findings: dict[str, str] = field(default_factory=dict)


# A redaction placeholder the model mangled is still in the answer (routing.ALWAYS_BLOCKING).
UNRESOLVED_PLACEHOLDER = "unresolved_placeholder"


@dataclass(frozen=True)
class ModelFailure:
    """One model that did not answer (error, timeout, open circuit)."""

    model: str
    error: str

    def __str__(self) -> str:
        return f"{self.model}: {self.error}"


class EngineError(Exception):
    """Every configured model failed; ``failures`` says why, per model."""

    def __init__(self, failures: list[ModelFailure]):
        self.failures = failures
        super().__init__("; ".join(str(f) for f in failures))
