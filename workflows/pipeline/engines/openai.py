"""The engine for OpenAI and any OpenAI-compatible server (vLLM, llama.cpp, Ollama, Azure...).

The only module that imports openai.
"""
from __future__ import annotations

import threading
import time

import openai
from django.conf import settings

from ...vocab import CallOutcome
from ..types import CallRecord, EngineReply, ModelRequest, ModelUnavailable, TokenLogprob

ENGINE = "openai"


class OpenAIEngine:
    name = ENGINE

    def __init__(self, *, api_key: str, base_url: str | None):
        self.client = openai.OpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=settings.REVIEWDESK_LLM_MAX_RETRIES,
            timeout=settings.REVIEWDESK_LLM_TIMEOUT,
        )

    def complete(self, request: ModelRequest) -> EngineReply:
        messages = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.user})
        kwargs = {}
        if request.json_schema is not None:
            # strict mode needs every property required and additionalProperties false, which
            # workflow authors do not always write; we validate the output ourselves anyway.
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "draft", "schema": request.json_schema, "strict": False},
            }
        started = time.monotonic()
        try:
            response = self.client.chat.completions.create(
                model=request.model,
                messages=messages,
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                logprobs=True,
                **kwargs,
            )
        except openai.OpenAIError as exc:
            call = CallRecord(
                purpose=request.purpose,
                engine=ENGINE,
                model_requested=request.model,
                outcome=CallOutcome.ERROR,
                latency_ms=int((time.monotonic() - started) * 1000),
                error=f"{type(exc).__name__}: {exc}"[:4000],
            )
            raise ModelUnavailable(request.model, call.error, (call,)) from exc
        latency_ms = int((time.monotonic() - started) * 1000)
        choice = response.choices[0]
        logprobs = None
        if choice.logprobs is not None and choice.logprobs.content:
            logprobs = tuple(TokenLogprob(t.token, t.logprob) for t in choice.logprobs.content)
        usage = response.usage
        call = CallRecord(
            purpose=request.purpose,
            engine=ENGINE,
            model_requested=request.model,
            model_reported=response.model or request.model,
            outcome=CallOutcome.OK,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_ms=latency_ms,
        )
        return EngineReply(
            engine=ENGINE,
            model_requested=request.model,
            model_reported=call.model_reported,
            content=choice.message.content or "",
            finish_reason=choice.finish_reason or "",
            token_logprobs=logprobs,
            calls=(call,),
        )


_engine: OpenAIEngine | None = None
_engine_key: tuple | None = None
_lock = threading.Lock()


def shared_engine() -> OpenAIEngine:
    """One engine (one HTTP client, one connection pool, one TLS context) per process,
    rebuilt only when the provider settings change (tests point it at their own server)."""
    global _engine, _engine_key
    key = (settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL, settings.REVIEWDESK_LLM_MAX_RETRIES,
           settings.REVIEWDESK_LLM_TIMEOUT)
    with _lock:
        if _engine is None or _engine_key != key:
            _engine = OpenAIEngine(api_key=settings.OPENAI_API_KEY, base_url=settings.OPENAI_BASE_URL)
            _engine_key = key
        return _engine
