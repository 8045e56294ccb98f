"""The engine for OpenAI and any OpenAI-compatible server (vLLM, llama.cpp, Ollama, Azure...).

The only module that imports openai.

``complete()`` answers one ModelRequest from one model. It may send several HTTP requests and
returns (or raises ModelUnavailable with) one CallRecord for every request actually sent, and
one for a request the open circuit kept from being sent:

- Retries live here and nowhere else: the client is built with ``max_retries=0``, so no request
  leaves without its record. Retried are the failures a second try can fix (timeouts,
  connection errors, 408, 409, 429, 5xx), at most REVIEWDESK_LLM_MAX_RETRIES times, after an
  exponential backoff with jitter or the server's ``retry-after``/``retry-after-ms`` (a server
  asking for more than REVIEWDESK_LLM_RETRY_WAIT_CAP is not retried: the next model is tried).
  Any other 4xx (bad key, unknown model) ends the call at once, not retryable.
- The loop is written out rather than delegated to tenacity: each try must check the shared
  breaker, may change the request (a refused parameter is dropped, which is not a retry and
  does not spend the budget), and leaves a record; a library's retry decorator would need a
  callback for each of these and would still not know about the time budget below.
- Every request has a connect and a total timeout (ModelRequest.timeouts). The total is held
  as wall time from sending to the answer: an httpx request hook shrinks the read timeout to
  what is left once connected. All tries of one model share the budget
  ``total * (retries + 1) + retries * REVIEWDESK_LLM_RETRY_WAIT_CAP``, which settings.py
  checks fits REVIEWDESK_LLM_MAX_MODELS times into the task's soft time limit.
- A circuit breaker per provider and model (breaker.py) shared through Redis skips a model that
  keeps failing.
- Parameters a server refuses are dropped and remembered (compat.py).
"""
from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import openai
from django.conf import settings

from ...vocab import CallOutcome
from ..types import CallRecord, EngineReply, ModelRequest, ModelUnavailable, TokenLogprob
from . import breaker, compat, log_call

ENGINE = "openai"
BACKOFF_BASE_SECONDS = 0.5  # the first retry waits 0.25-0.5 s, the second 0.5-1 s, ...
MIN_ATTEMPT_SECONDS = 1.0  # no request is sent with less time than this left in the budget
RETRYABLE_STATUSES = frozenset({408, 409, 429})  # and every 5xx

log = logging.getLogger(__name__)


class OpenAIEngine:
    name = ENGINE

    def __init__(self, *, api_key: str, base_url: str | None):
        self.base_url = base_url
        self.provider = breaker.provider_of(base_url)
        self.client = openai.OpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,  # see the module docstring: one retry layer, ours
            timeout=openai.Timeout(settings.REVIEWDESK_LLM_TIMEOUT, connect=settings.REVIEWDESK_LLM_CONNECT_TIMEOUT),
            http_client=openai.DefaultHttpxClient(event_hooks={"request": [_hold_total_timeout]}),
        )

    def complete(self, request: ModelRequest) -> EngineReply:
        return _Exchange(self, request).run()


@dataclass(frozen=True)
class _Choice:
    content: str
    finish_reason: str
    logprobs: tuple[TokenLogprob, ...] | None


@dataclass(frozen=True)
class _Answer:
    """The fields of a chat.completions answer that a reply is made of, read from its JSON as
    leniently as the client's own (non-strict) model construction: a missing or null field
    reads as empty; an answer that is not a JSON object is an unreadable answer
    (APIResponseValidationError, an OpenAIError like the client raises for one)."""

    model: str
    choices: tuple[_Choice, ...]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int

    @classmethod
    def read(cls, http_response) -> _Answer:
        try:
            body = json.loads(http_response.content)
        except ValueError as exc:
            raise openai.APIResponseValidationError(
                response=http_response, body=http_response.text, message=f"the answer is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise openai.APIResponseValidationError(
                response=http_response, body=body, message="the answer is not a JSON object")
        usage = _obj(body.get("usage"))
        return cls(
            model=_text(body.get("model")),
            choices=tuple(_choice(c) for c in _list(body.get("choices"))),
            prompt_tokens=_int(usage.get("prompt_tokens")),
            completion_tokens=_int(usage.get("completion_tokens")),
            cached_tokens=_int(_obj(usage.get("prompt_tokens_details")).get("cached_tokens")),
        )


def _choice(raw) -> _Choice:
    choice = _obj(raw)
    content = _list(_obj(choice.get("logprobs")).get("content"))
    logprobs = tuple(TokenLogprob(_text(t.get("token")), _float(t.get("logprob")))
                     for t in map(_obj, content)) or None
    return _Choice(content=_text(_obj(choice.get("message")).get("content")),
                   finish_reason=_text(choice.get("finish_reason")), logprobs=logprobs)


def _obj(value) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _float(value) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class _GiveUp(Exception):
    def __init__(self, reason: str, *, retryable: bool = True):
        self.reason = reason
        self.retryable = retryable


class _Exchange:
    """One ``complete()``: the requests sent for one ModelRequest and what they taught us."""

    def __init__(self, engine: OpenAIEngine, request: ModelRequest):
        self.engine = engine
        self.request = request
        self.circuit = breaker.circuit_for(request.model, base_url=engine.base_url)
        self.params = compat.remembered(engine.provider, request.model, wants_json=request.json_schema is not None)
        self.learnt = False  # a parameter was dropped during this exchange
        self.guessed = False  # an unexplained 5xx was already taken for a refusal
        self.sure_refusal = False  # the server named a parameter it refused
        self.calls: list[CallRecord] = []
        self.stream_refused = False  # the server answered 4xx to stream=True: ask plainly
        self.failures = 0  # requests that spend the retry budget (and count for the breaker)
        retries = settings.REVIEWDESK_LLM_MAX_RETRIES
        self.max_failures = retries + 1
        self.deadline = time.monotonic() + budget_seconds(request.timeouts.total, retries)
        if request.deadline is not None:  # the run's own deadline (pipeline.run) comes first
            self.deadline = min(self.deadline, request.deadline)
        self.min_attempt = min(MIN_ATTEMPT_SECONDS, request.timeouts.total)

    def run(self) -> EngineReply:
        try:
            while True:
                if not self.circuit.allows() and not self.circuit.wait_for_trial(self.deadline - self.min_attempt):
                    self._record(CallOutcome.CIRCUIT_OPEN, 0.0, error="circuit open: no request sent")
                    raise _GiveUp(f"circuit open ({self.circuit.seconds_until_trial():.0f}s until a trial request)")
                timeout = self._timeout()
                started = time.monotonic()
                try:
                    response = self._send(timeout)
                except openai.APIStatusError as exc:
                    wait = self._after_status_error(exc, started)
                except openai.APITimeoutError as exc:
                    wait = self._after_failure(CallOutcome.TIMEOUT, started, f"timed out after {timeout.read:.1f}s ({type(exc).__name__})")
                except openai.OpenAIError as exc:  # connection refused or reset, an unreadable answer
                    wait = self._after_failure(CallOutcome.ERROR, started, f"{type(exc).__name__}: {exc}")
                else:
                    if response.choices:
                        return self._reply(response, started)
                    wait = self._after_failure(CallOutcome.ERROR, started, "the answer had no choices", status=200)
                if wait > 0:
                    time.sleep(wait)
        except _GiveUp as stop:
            raise ModelUnavailable(self.request.model, stop.reason, tuple(self.calls), retryable=stop.retryable) from None

    # --- one request ---------------------------------------------------------------------

    def _timeout(self) -> openai.Timeout:
        remaining = self.deadline - time.monotonic()
        total = min(self.request.timeouts.total, remaining)
        if total < self.min_attempt:
            raise _GiveUp(f"time budget spent after {len(self.calls)} requests; last: {self._last_error()}")
        return openai.Timeout(total, connect=min(self.request.timeouts.connect, total))

    def _send(self, timeout: openai.Timeout) -> _Answer:
        kwargs = request_kwargs(self.request, self.params)
        sink = self.request.text_sink
        if sink is None or self.stream_refused:
            return self._send_plain(kwargs, timeout)
        try:
            # include_usage: the last chunk carries the token counts a plain answer has, so
            # cost tracking is the same streamed or not; logprobs come with each chunk.
            stream = self.engine.client.chat.completions.create(
                **kwargs, stream=True, stream_options={"include_usage": True}, timeout=timeout)
        except openai.APIStatusError as exc:
            if exc.status_code not in (400, 422) or "stream" not in _status_text(exc).lower():
                raise
            # A server that cannot stream still answers: the page polls instead. Not a retry.
            self._record(CallOutcome.REFUSED_PARAMETER, time.monotonic(), http_status=exc.status_code,
                         error=f"refused streaming, sending again without it: {_status_text(exc)}")
            self.stream_refused = True
            return self._send_plain(kwargs, timeout)
        return collect_stream(stream, sink, deadline=time.monotonic() + timeout.read)

    def _send_plain(self, kwargs: dict, timeout: openai.Timeout) -> _Answer:
        # The raw response, read by _Answer: the client's typed ChatCompletion is built by
        # validating every field (each token's logprob entry included) through pydantic, which
        # cost about 2 ms of CPU per answer, under the GIL, for the few fields used here.
        # Errors are raised as before (APIStatusError, timeouts, connection errors).
        raw = self.engine.client.chat.completions.with_raw_response.create(**kwargs, timeout=timeout)
        return _Answer.read(raw.http_response)

    def _reply(self, response: _Answer, started: float) -> EngineReply:
        choice = response.choices[0]
        call = self._record(
            CallOutcome.OK,
            started,
            http_status=200,
            model_reported=response.model or self.request.model,
            prompt_tokens=response.prompt_tokens,
            completion_tokens=response.completion_tokens,
            cached_tokens=response.cached_tokens,
        )
        self.circuit.record_success()
        if self.learnt:
            compat.remember(self.engine.provider, self.request.model, self.params, guessed=not self.sure_refusal)
        return EngineReply(
            engine=ENGINE,
            model_requested=self.request.model,
            model_reported=call.model_reported,
            content=choice.content,
            finish_reason=choice.finish_reason,  # "length": the run turns it into a finding
            token_logprobs=choice.logprobs,
            calls=tuple(self.calls),
        )

    # --- what a failed request leads to -------------------------------------------------------

    def _after_status_error(self, exc: openai.APIStatusError, started: float) -> float:
        status = exc.status_code
        text = _status_text(exc)
        refusal = compat.refusal(self.params, status, text)
        if refusal is not None:
            return self._after_refusal(refusal, status, text, started)
        retry_after = _retry_after(exc.response.headers)
        should_retry = exc.response.headers.get("x-should-retry")
        if status == 429 and exc.code == "insufficient_quota":
            self._record(CallOutcome.RATE_LIMITED, started, http_status=status, error=text)
            raise _GiveUp(text, retryable=False)  # no wait fixes an exhausted quota: a person must act
        if status in RETRYABLE_STATUSES or status >= 500:
            outcome = CallOutcome.RATE_LIMITED if status == 429 else CallOutcome.ERROR
            return self._after_failure(outcome, started, text, status=status, retry_after=retry_after,
                                       retry=should_retry != "false")
        self._record(CallOutcome.CLIENT_ERROR, started, http_status=status, error=text)
        raise _GiveUp(text, retryable=False)

    def _after_refusal(self, refusal: tuple[str, bool], status: int, text: str, started: float) -> float:
        name, named = refusal
        self._record(CallOutcome.REFUSED_PARAMETER, started, http_status=status,
                     error=f"refused {name}, sending again without it: {text}")
        self.params = self.params.without(name)
        self.learnt = True
        self.sure_refusal = self.sure_refusal or named
        if named or not self.guessed:
            # A refusal is an answer, not an outage: no retry spent, nothing told to the breaker.
            # An unexplained 5xx gets that benefit of the doubt once; after that it is also
            # counted as a failure, so a server answering 500 to everything is not degraded
            # for free through every step.
            self.guessed = self.guessed or not named
            return 0.0
        return self._count_failure(text, retry_after=None)

    def _after_failure(self, outcome: CallOutcome, started: float, text: str, *, status: int | None = None,
                       retry_after: float | None = None, retry: bool = True) -> float:
        self._record(outcome, started, http_status=status, error=text)
        if not retry:
            self.circuit.record_failure(text)
            raise _GiveUp(f"{text} (the server asked not to retry)")
        return self._count_failure(text, retry_after=retry_after)

    def _count_failure(self, text: str, *, retry_after: float | None) -> float:
        """Spend one try of the budget and tell the breaker; return the wait before the next."""
        self.circuit.record_failure(text)
        self.failures += 1
        log.warning("model %s failed (%d/%d): %s", self.request.model, self.failures, self.max_failures, text[:300])
        if self.failures >= self.max_failures:
            raise _GiveUp(f"{text} (after {self.failures} tries)" if self.failures > 1 else text)
        cap = settings.REVIEWDESK_LLM_RETRY_WAIT_CAP
        if retry_after is not None and retry_after > cap:
            raise _GiveUp(f"{text} (the server asked to wait {retry_after:.0f}s, more than the {cap:g}s we wait)")
        if retry_after is not None:
            wait = max(0.0, retry_after)
        else:
            wait = min(cap, BACKOFF_BASE_SECONDS * 2 ** (self.failures - 1)) * random.uniform(0.5, 1.0)
        if time.monotonic() + wait + self.min_attempt > self.deadline:
            raise _GiveUp(f"{text} (no time left for another try)")
        return wait

    def _record(self, outcome: CallOutcome, started: float, **fields: Any) -> CallRecord:
        latency = int((time.monotonic() - started) * 1000) if started else 0
        if "error" in fields:
            fields["error"] = fields["error"][:4000]
        call = CallRecord(
            purpose=self.request.purpose,
            engine=ENGINE,
            model_requested=self.request.model,
            outcome=outcome,
            latency_ms=latency,
            dropped_parameters=self.params.recorded(),
            **fields,
        )
        self.calls.append(call)
        log_call(call)
        return call

    def _last_error(self) -> str:
        return self.calls[-1].error if self.calls else "none"


def collect_stream(stream, sink, *, deadline: float):
    """Read a streamed answer into the shape of a plain one (``_Answer``), writing each
    piece of text to ``sink`` as it arrives.

    Errors while reading the body come from httpx, not from the openai client (which wraps
    only what happens before the first byte): they are turned into the client's own timeout
    and connection errors, so the retry loop treats a stream that broke off like a request
    that failed. The total timeout holds for the whole body, not for each chunk.
    """
    import httpx

    content: list[str] = []
    logprobs: list = []
    finish_reason = None
    model = usage = None
    has_choice = False
    sink.start()
    try:
        for chunk in stream:
            model = model or chunk.model
            usage = chunk.usage or usage
            for choice in chunk.choices[:1]:
                has_choice = True
                if choice.delta is not None and choice.delta.content:
                    content.append(choice.delta.content)
                    sink.write(choice.delta.content)
                if choice.logprobs is not None and choice.logprobs.content:
                    logprobs.extend(choice.logprobs.content)
                finish_reason = choice.finish_reason or finish_reason
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("the streamed answer took longer than its total timeout")
    except httpx.TimeoutException as exc:
        raise openai.APITimeoutError(request=stream.response.request) from exc
    except httpx.HTTPError as exc:
        raise openai.APIConnectionError(message=f"the streamed answer broke off: {exc}",
                                        request=stream.response.request) from exc
    finally:
        stream.close()
    usage_tokens = {
        "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
        "completion_tokens": getattr(usage, "completion_tokens", 0) or 0,
        "cached_tokens": getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", 0) or 0,
    }
    choices = ()
    if has_choice:
        choices = (_Choice(
            content="".join(content),
            finish_reason=finish_reason or "",
            logprobs=tuple(TokenLogprob(t.token, float(t.logprob)) for t in logprobs) or None,
        ),)
    return _Answer(model=model or "", choices=choices, **usage_tokens)


def budget_seconds(total_timeout: float, retries: int) -> float:
    """The most time all tries of one model may take (settings.py checks the same sum)."""
    return total_timeout * (retries + 1) + retries * settings.REVIEWDESK_LLM_RETRY_WAIT_CAP


def request_kwargs(request: ModelRequest, params: compat.Params) -> dict[str, Any]:
    """The chat.completions arguments for ``request``, less what ``params`` drops."""
    system = request.system
    if params.schema_in_prompt:
        system = "\n\n".join(part for part in (system, compat.schema_instructions(request.json_schema)) if part)
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": request.user})
    kwargs: dict[str, Any] = {"model": request.model, "messages": messages, params.max_tokens_name: request.max_tokens}
    if params.temperature:
        kwargs["temperature"] = request.temperature
    if params.logprobs:
        kwargs["logprobs"] = True
    if params.top_logprobs:
        # Some servers (llama.cpp) return logprobs: null unless top_logprobs is asked for too.
        kwargs["top_logprobs"] = 1
    if params.response_format == compat.JSON_SCHEMA:
        # strict mode needs every property required and additionalProperties false, which
        # workflow authors do not always write; we validate the output ourselves anyway.
        kwargs["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "draft", "schema": request.json_schema, "strict": False},
        }
    elif params.response_format == compat.JSON_OBJECT:
        kwargs["response_format"] = {"type": "json_object"}
    return kwargs


def _status_text(exc: openai.APIStatusError) -> str:
    # The server's own message (the client's adds "Error code: 500 - " and the whole body).
    message = exc.body.get("message") if isinstance(exc.body, dict) else None
    text = f"HTTP {exc.status_code}: {message or exc.message}"
    if exc.param and exc.param not in text:
        text += f" (param: {exc.param})"
    return text


def _retry_after(headers) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, retry-after in seconds or as a date)."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) / divisor
        except ValueError:
            continue
        if math.isfinite(value):
            return max(0.0, value)
        return math.inf
    raw = headers.get("retry-after")
    if raw:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(raw).timestamp() - time.time())
        except (TypeError, ValueError, OverflowError):
            return None
    return None


def _hold_total_timeout(request) -> None:
    """Make the request's read timeout the part of its total left once connected.

    httpx has no total timeout: its read timeout restarts after the connect phase. The openai
    client puts ``read`` = our total into the request's timeout dict (a fresh dict per
    request); this hook notes the deadline and, through httpcore's documented ``trace``
    extension, shrinks ``read`` to what is left just before the response is read, so connect
    plus wait stay within the total.
    """
    timeouts = request.extensions.get("timeout")
    if not isinstance(timeouts, dict) or timeouts.get("read") is None:
        return
    deadline = time.monotonic() + timeouts["read"]
    previous = request.extensions.get("trace")

    def trace(event: str, info: dict) -> None:
        if event.endswith(("receive_response_headers.started", "receive_response_body.started")):
            timeouts["read"] = max(deadline - time.monotonic(), 0.001)
        if previous is not None:
            previous(event, info)

    request.extensions["trace"] = trace


def reset_provider_state(base_url: str | None = None) -> None:
    """Close every circuit of the provider and forget the parameters it refused, for every
    worker (tests start from this; so may an operator after fixing the provider)."""
    base_url = base_url if base_url is not None else settings.OPENAI_BASE_URL
    breaker.reset_circuits(base_url=base_url)
    compat.forget_provider(breaker.provider_of(base_url))


_engine: OpenAIEngine | None = None
_engine_key: tuple | None = None
_lock = threading.Lock()


def shared_engine() -> OpenAIEngine:
    """One engine (one HTTP client, one connection pool, one TLS context) per process,
    rebuilt only when the provider settings change (tests point it at their own server).
    The client is thread-safe; each ``complete()`` keeps its own state."""
    global _engine, _engine_key
    key = (settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL)
    with _lock:
        if _engine is None or _engine_key != key:
            _engine = OpenAIEngine(api_key=settings.OPENAI_API_KEY, base_url=settings.OPENAI_BASE_URL)
            _engine_key = key
        return _engine
