"""Draft generation through the openai client, against OpenAI or any compatible server.

The client's own retries (exponential backoff on connection errors, 429 and 5xx) bound each
model; then the next model in ``fallback`` is tried. The per-provider circuit breaker comes
with the resilience issue.
"""
from __future__ import annotations

import time

import openai
from django.conf import settings

from ..definitions import WorkflowDefinition
from .prompts import RenderedPrompt
from .types import Completion, EngineError, ModelFailure

ENGINE = "openai"


def engine_name() -> str:
    return ENGINE if settings.OPENAI_API_KEY else "offline"


def _client() -> openai.OpenAI:
    return openai.OpenAI(
        api_key=settings.OPENAI_API_KEY,
        base_url=settings.OPENAI_BASE_URL,
        timeout=settings.REVIEWDESK_LLM_TIMEOUT,
        max_retries=settings.REVIEWDESK_LLM_MAX_RETRIES,
    )


def _response_format(spec: WorkflowDefinition) -> dict | None:
    if spec.output.format != "json":
        return None
    return {
        "type": "json_schema",
        # strict mode needs every property required and additionalProperties false, which
        # workflow authors do not always write; we validate the output ourselves anyway.
        "json_schema": {"name": "draft", "schema": spec.output.json_schema, "strict": False},
    }


def _call(client: openai.OpenAI, model: str, spec: WorkflowDefinition, prompt: RenderedPrompt) -> Completion:
    messages = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    messages.append({"role": "user", "content": prompt.user})
    kwargs = {}
    fmt = _response_format(spec)
    if fmt:
        kwargs["response_format"] = fmt
    started = time.monotonic()
    response = client.chat.completions.create(
        model=model,
        messages=messages,
        temperature=spec.model.temperature,
        max_tokens=spec.model.max_tokens,
        logprobs=True,
        **kwargs,
    )
    latency_ms = int((time.monotonic() - started) * 1000)
    choice = response.choices[0]
    logprobs = None
    if choice.logprobs is not None and choice.logprobs.content:
        logprobs = [token.logprob for token in choice.logprobs.content]
    usage = response.usage
    return Completion(
        engine=ENGINE,
        model=response.model or model,
        content=choice.message.content or "",
        token_logprobs=logprobs,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        latency_ms=latency_ms,
    )


def complete(spec: WorkflowDefinition, prompt: RenderedPrompt) -> Completion:
    models = [spec.model.name or settings.REVIEWDESK_DEFAULT_MODEL, *spec.model.fallback]
    client = _client()
    failures: list[ModelFailure] = []
    for model in models:
        try:
            completion = _call(client, model, spec, prompt)
        except openai.OpenAIError as exc:
            failures.append(ModelFailure(model, f"{type(exc).__name__}: {exc}"[:500]))
            continue
        completion.failures = failures
        return completion
    raise EngineError(failures)
