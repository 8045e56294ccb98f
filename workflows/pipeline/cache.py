"""The draft cache: the same version, the same redacted prompt, the same model at
temperature 0 gives the stored answer again, at no cost.

Only the model's answer is cached (before PII is restored, so the cache holds no personal
data the prompt did not already hide); validation and scoring run again on every hit, so a
change to the validators applies to cached answers too. Django's cache framework holds it:
Redis when REDIS_URL is set (shared by every worker), process memory otherwise.
"""
from __future__ import annotations

import hashlib
import json
import logging

from django.conf import settings
from django.core.cache import caches

from ..definitions import WorkflowDefinition, definition_hash
from ..vocab import CallOutcome
from .prompts import RenderedPrompt
from .types import CallRecord, EngineReply, TokenLogprob

log = logging.getLogger(__name__)
_FORMAT = 2  # bump when the stored shape changes; old entries are then simply missed


def cacheable(spec: WorkflowDefinition) -> bool:
    # Above temperature 0 a second answer is meant to differ; reusing one would hide that.
    return spec.cache and spec.model.temperature == 0


def key_for(spec: WorkflowDefinition, prompt: RenderedPrompt, model: str) -> str:
    parts = [str(_FORMAT), definition_hash(spec.as_dict()), model, prompt.system, prompt.user]
    return "draft:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _store():
    return caches[settings.REVIEWDESK_DRAFT_CACHE]


def lookup(key: str) -> EngineReply | None:
    try:
        raw = _store().get(key)
    except Exception:  # a cache outage costs a model call, never a draft
        log.warning("draft cache unavailable for lookup", exc_info=True)
        return None
    if not raw:
        return None
    data = json.loads(raw)
    hit = CallRecord(
        purpose=data["purpose"],
        engine=data["engine"],
        model_requested=data["model_requested"],
        model_reported=data["model_reported"],
        outcome=CallOutcome.CACHE_HIT,
    )
    logprobs = data["token_logprobs"]
    return EngineReply(
        engine=data["engine"],
        model_requested=data["model_requested"],
        model_reported=data["model_reported"],
        content=data["content"],
        finish_reason=data["finish_reason"],
        token_logprobs=tuple(TokenLogprob(t, lp) for t, lp in logprobs) if logprobs is not None else None,
        calls=(hit,),
        certainty_hint=data["certainty_hint"],
        cache_hit=True,
        cached_signals=data.get("signals") or {},
    )


def store(key: str, reply: EngineReply, *, signals: dict | None = None) -> None:
    data = {
        "signals": signals or {},
        "purpose": str(reply.calls[-1].purpose) if reply.calls else "draft",
        "engine": reply.engine,
        "model_requested": reply.model_requested,
        "model_reported": reply.model_reported,
        "content": reply.content,
        "finish_reason": reply.finish_reason,
        "token_logprobs": [[t.token, t.logprob] for t in reply.token_logprobs] if reply.token_logprobs is not None else None,
        "certainty_hint": reply.certainty_hint,
    }
    try:
        _store().set(key, json.dumps(data), timeout=settings.REVIEWDESK_CACHE_TTL_SECONDS)
    except Exception:
        log.warning("draft cache unavailable for store", exc_info=True)
