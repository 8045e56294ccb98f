"""What an OpenAI-compatible server accepts, learnt from what it refuses.

Many servers (vLLM, llama.cpp, Ollama, Azure, LiteLLM) implement only part of the API. A
request starts with everything scoring wants (``response_format`` with the workflow's
``json_schema``, ``logprobs`` with ``top_logprobs``); when the server refuses a parameter the
engine sends the request again without it, one step at a time:

    response_format json_schema -> json_object (schema written into the prompt)
                                -> no response_format (schema written into the prompt)
    top_logprobs -> (logprobs only) -> no logprobs
    max_tokens -> max_completion_tokens          (newer OpenAI models)
    temperature -> the server's default          (models that only accept their default)

What the server refused is remembered per provider and model in Redis, for
REVIEWDESK_LLM_PARAMETER_MEMORY_SECONDS, so later requests start where this one succeeded
instead of paying for the refusal again; once the memory expires the full request is tried
again (a server may have been upgraded).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings

from .breaker import delete_keys, shared_redis

log = logging.getLogger(__name__)

KEY_PREFIX = "reviewdesk:llm-params"


def _prefix() -> str:
    # REVIEWDESK_NAMESPACE keeps deployments (and test runs) sharing one Redis apart.
    return f"{settings.REVIEWDESK_NAMESPACE}{KEY_PREFIX}"

# The names recorded in CallRecord.dropped_parameters, in the order they are given up.
JSON_SCHEMA = "json_schema"
JSON_OBJECT = "json_object"
TOP_LOGPROBS = "top_logprobs"
LOGPROBS = "logprobs"
MAX_TOKENS = "max_tokens"
TEMPERATURE = "temperature"
_ORDER = (JSON_SCHEMA, JSON_OBJECT, TOP_LOGPROBS, LOGPROBS, MAX_TOKENS, TEMPERATURE)

# Statuses with which servers refuse a parameter: 400/422 (validation), 500/501 (llama.cpp
# answers 500 to a json_schema it cannot turn into a grammar). 401/403/404/429/502-504 never mean
# "this parameter".
REFUSAL_STATUSES = frozenset({400, 422, 500, 501})
_UNSUPPORTED_WORDS = ("unsupported", "not supported", "does not support", "only the default", "not allowed",
                      "unrecognized", "unknown", "extra")
_SCHEMA_WORDS = ("response_format", "json_schema", "json_object", "grammar", "schema")

SCHEMA_INSTRUCTIONS = (
    "Answer with a single JSON object and nothing else: no prose, no code fence. "
    "It must match this JSON Schema:\n"
)


@dataclass(frozen=True)
class Params:
    """The optional parameters one request carries, as the set of those it goes without."""

    wants_json: bool
    dropped: frozenset[str] = frozenset()

    @property
    def response_format(self) -> str | None:
        """json_schema, json_object, or None (plain text, or the schema only in the prompt)."""
        if not self.wants_json:
            return None
        if JSON_SCHEMA not in self.dropped:
            return JSON_SCHEMA
        if JSON_OBJECT not in self.dropped:
            return JSON_OBJECT
        return None

    @property
    def schema_in_prompt(self) -> bool:
        return self.wants_json and JSON_SCHEMA in self.dropped

    @property
    def logprobs(self) -> bool:
        return LOGPROBS not in self.dropped

    @property
    def top_logprobs(self) -> bool:
        return self.logprobs and TOP_LOGPROBS not in self.dropped

    @property
    def max_tokens_name(self) -> str:
        return "max_completion_tokens" if MAX_TOKENS in self.dropped else "max_tokens"

    @property
    def temperature(self) -> bool:
        return TEMPERATURE not in self.dropped

    def recorded(self) -> tuple[str, ...]:
        """What this request went without, for CallRecord.dropped_parameters (a text request
        never carried a response_format, so it does not list one as dropped)."""
        relevant = self.dropped if self.wants_json else self.dropped - {JSON_SCHEMA, JSON_OBJECT}
        return tuple(name for name in _ORDER if name in relevant)

    def without(self, name: str) -> Params:
        dropped = {name}
        if name == JSON_OBJECT:
            dropped.add(JSON_SCHEMA)
        if name == LOGPROBS:
            dropped.add(TOP_LOGPROBS)
        return Params(self.wants_json, self.dropped | dropped)


def refusal(params: Params, status: int, message: str) -> tuple[str, bool] | None:
    """``(parameter, named)`` when giving up that parameter could help; None otherwise.

    A message that names a parameter decides (``named`` True: a sure refusal). A 500/501 that
    names none, while the request still carries a response_format, is taken as a refusal of
    it (``named`` False): llama.cpp answers a json_schema it cannot turn into a grammar with a
    500 that says nothing useful. Only response_format gets that guess: logprobs refusals come
    as a 400 naming them, and a guess wrongly dropping logprobs after a passing 500 would cost
    the certainty score for as long as it is remembered. The engine decides whether a guess
    also counts as a provider failure.
    """
    if status not in REFUSAL_STATUSES:
        return None
    text = message.lower()
    if params.top_logprobs and TOP_LOGPROBS in text:
        return TOP_LOGPROBS, True
    if params.logprobs and LOGPROBS in text:
        return LOGPROBS, True
    if params.max_tokens_name == "max_tokens" and "max_completion_tokens" in text:
        return MAX_TOKENS, True
    if params.temperature and TEMPERATURE in text and any(w in text for w in _UNSUPPORTED_WORDS):
        return TEMPERATURE, True
    if params.response_format and any(w in text for w in _SCHEMA_WORDS):
        return params.response_format, True
    if status >= 500 and params.response_format:
        return params.response_format, False
    return None


def schema_instructions(schema: dict) -> str:
    # The schema's own property order is the order the model is asked to write the fields in.
    return SCHEMA_INSTRUCTIONS + json.dumps(schema, ensure_ascii=False)


# --- memory shared by every worker ------------------------------------------------------------
#
# In Redis (REDIS_URL) beside the circuit breakers, so every worker starts where one learnt;
# in process memory for the embedded demo run. A Redis outage costs a refusal, never a draft.

_local: dict[str, tuple[float, tuple[str, ...]]] = {}  # without Redis: key -> (expires, names)
_local_lock = threading.Lock()


def _key(provider: str, model: str) -> str:
    return f"{_prefix()}:{provider}:{model}"


def _load(key: str) -> tuple[str, ...]:
    if settings.REDIS_URL:
        raw = shared_redis().get(key)
        return tuple(json.loads(raw)) if raw else ()
    with _local_lock:
        expires, names = _local.get(key, (0.0, ()))
    return names if expires > time.monotonic() else ()


def remembered(provider: str, model: str, *, wants_json: bool) -> Params:
    """The parameters to start with: all of them, less what this server refused lately."""
    try:
        names = _load(_key(provider, model))
    except Exception:
        log.warning("parameter memory unavailable", exc_info=True)
        names = ()
    return Params(wants_json, frozenset(n for n in names if n in _ORDER))


# How long a guessed refusal (an unexplained 500 taken as "no json_schema here") is kept: a
# passing 500 from a healthy server must not keep every workflow on json_object for an hour.
GUESSED_MEMORY_SECONDS = 300


def remember(provider: str, model: str, params: Params, *, guessed: bool = False) -> None:
    """Keep what a successful request went without, merged with what is already known. A
    guess is kept for minutes, a refusal the server named for REVIEWDESK_LLM_PARAMETER_MEMORY_SECONDS."""
    ttl = settings.REVIEWDESK_LLM_PARAMETER_MEMORY_SECONDS
    if guessed:
        ttl = min(ttl, GUESSED_MEMORY_SECONDS)
    if ttl <= 0:
        return
    key = _key(provider, model)
    # A text request learns nothing about response_format; keep only what it proved.
    learnt = params.dropped if params.wants_json else params.dropped - {JSON_SCHEMA, JSON_OBJECT}
    try:
        names = sorted(set(_load(key)) | learnt, key=_ORDER.index)
        if settings.REDIS_URL:
            shared_redis().set(key, json.dumps(names), ex=ttl)
        else:
            with _local_lock:
                _local[key] = (time.monotonic() + ttl, tuple(names))
    except Exception:
        log.warning("parameter memory unavailable", exc_info=True)


def forget_provider(provider: str) -> None:
    """Forget every refusal of the provider's models (tests; a server upgraded in place)."""
    prefix = _key(provider, "")
    with _local_lock:
        for key in [k for k in _local if k.startswith(prefix)]:
            del _local[key]
    if settings.REDIS_URL:
        delete_keys(prefix)
