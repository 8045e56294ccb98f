"""The values that flow through the drafting pipeline. All frozen: ``run()`` is pure and its
result can be stored, cached, compared in an eval run or thrown away by a dry run."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Mapping, Protocol

from ..vocab import CallOutcome, CallPurpose


@dataclass(frozen=True)
class Timeouts:
    connect: float
    total: float


@dataclass(frozen=True)
class ModelRequest:
    """One logical request to one model (the engine may send it more than once)."""

    model: str
    system: str
    user: str
    json_schema: dict[str, Any] | None  # None: free text
    temperature: float
    max_tokens: int
    timeouts: Timeouts
    purpose: CallPurpose = CallPurpose.DRAFT
    deadline: float | None = None  # time.monotonic() after which no request may be sent
    # The redacted form values and field names, for engines that draft without a model (the
    # offline engine). A model never sees them except through the rendered prompt.
    values: Mapping[str, Any] = field(default_factory=dict)
    field_names: tuple[str, ...] = ()
    # Where the engine writes the answer's text as it arrives (the submitter's page), or None.
    # Only the first draft request of a run carries one (pipeline.run); the engine still
    # returns the whole reply as without it.
    text_sink: "TextSink | None" = field(default=None, compare=False)


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float


@dataclass(frozen=True)
class CallRecord:
    """One HTTP request actually sent (or, for cache hits and open circuits, not sent).

    ``error`` is the provider's own text, which may name its files or hosts: staff see it,
    submitters never do.
    """

    purpose: CallPurpose
    engine: str
    model_requested: str
    outcome: CallOutcome
    model_reported: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_ms: int = 0
    http_status: int | None = None
    error: str = ""
    dropped_parameters: tuple[str, ...] = ()  # what this server refused and we retried without

    @property
    def ok(self) -> bool:
        return self.outcome in (CallOutcome.OK, CallOutcome.CACHE_HIT)


@dataclass(frozen=True)
class EngineReply:
    """A successful answer from one model, with every request it took to get it."""

    engine: str
    model_requested: str
    model_reported: str
    content: str
    finish_reason: str
    token_logprobs: tuple[TokenLogprob, ...] | None
    calls: tuple[CallRecord, ...]
    certainty_hint: float | None = None  # the offline engine's stated heuristic
    cache_hit: bool = False
    # On a cache hit: what the first run measured besides the answer (QA grade, agreement).
    cached_signals: Mapping[str, Any] = field(default_factory=dict)


class ModelUnavailable(Exception):
    """One model gave no answer (errors after retries, timeout, open circuit, refusal).

    ``calls`` are the requests it cost; ``retryable`` is False for a refusal no retry fixes
    (an unknown model, a bad key).
    """

    def __init__(self, model: str, reason: str, calls: tuple[CallRecord, ...], *, retryable: bool = True):
        self.model = model
        self.reason = reason
        self.calls = calls
        self.retryable = retryable
        super().__init__(f"{model}: {reason}")


class Engine(Protocol):
    """What the pipeline needs from a model provider (openai-compatible or offline)."""

    name: str

    def complete(self, request: ModelRequest) -> EngineReply:
        """Answer the request or raise ModelUnavailable (with the calls it made)."""
        ...


@dataclass(frozen=True)
class Attempt:
    """One drafting try the pipeline made and kept for the reviewer (the primary answer
    before a repair or a cascade replaced it)."""

    purpose: CallPurpose
    model: str
    content: str
    score: float
    findings: tuple[str, ...]
    finding_details: Mapping[str, str]


@dataclass(frozen=True)
class Failure:
    """Why no draft could be made. ``detail`` (provider text) is for staff only."""

    kind: str  # vocab.FailureKind
    detail: str


@dataclass(frozen=True)
class DraftResult:
    """Everything ``run()`` decided. No database row exists for any of it yet."""

    engine: str
    model: str  # the model that wrote the chosen draft, as the server reported it
    model_requested: str
    content: str  # with real values restored
    parsed: Any
    score: float
    components: Mapping[str, Any]
    findings: tuple[str, ...]
    finding_details: Mapping[str, str]
    calls: tuple[CallRecord, ...]
    cache_hit: bool = False
    redacted: tuple[str, ...] = ()  # what was replaced before the model saw it (field names, entity kinds)
    pii_mode: str = "redact"
    earlier_attempts: tuple[Attempt, ...] = ()
    failure: Failure | None = None

    @property
    def failed(self) -> bool:
        return self.failure is not None

    @property
    def prompt_tokens(self) -> int:
        return sum(c.prompt_tokens for c in self.calls)

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.calls)

    @property
    def latency_ms(self) -> int:
        return sum(c.latency_ms for c in self.calls)

    @property
    def cost_usd(self) -> Decimal:
        return sum((c.cost_usd for c in self.calls), Decimal(0))


@dataclass(frozen=True)
class RunOptions:
    """Knobs a caller may turn without changing the definition (eval runs, dry runs)."""

    use_cache: bool = True
    # Seconds the whole run may take (every call, retry, repair, QA and cascade); None: the
    # REVIEWDESK_RUN_BUDGET_SECONDS setting, which fits inside the task's time limit.
    time_budget_seconds: float | None = None
    # Receives the first draft's text while the model writes it (workflows/draft_stream.py);
    # the caller decides whether this workflow's drafts may be shown before routing.
    text_sink: "TextSink | None" = None


class TextSink(Protocol):
    """Receives a draft's text while it is written (workflows.draft_stream.RedisDraftSink)."""

    def start(self) -> None:
        """A new answer begins (a retried request starts over)."""

    def write(self, delta: str) -> None:
        """The next piece of text."""
