"""The price table: US dollars per million tokens, per model.

Shipped defaults below; a deployment overrides or extends them without code through
REVIEWDESK_PRICES (a JSON object {"model": {"input": x, "output": y, "cached_input": z}},
inline or as a path to a file). A model missing from the table costs 0 and is logged once,
so an unknown model shows up as "no price" instead of a made-up number.
"""
from __future__ import annotations

import json
import logging
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from django.conf import settings

from .types import CallRecord

log = logging.getLogger(__name__)
PER_TOKENS = Decimal(1_000_000)

# Public list prices (USD per 1M tokens) as of 2026; cached input where the provider bills it.
DEFAULT_PRICES: dict[str, dict[str, str]] = {
    "gpt-4o-mini": {"input": "0.15", "output": "0.60", "cached_input": "0.075"},
    "gpt-4o": {"input": "2.50", "output": "10.00", "cached_input": "1.25"},
    "gpt-4.1-mini": {"input": "0.40", "output": "1.60", "cached_input": "0.10"},
    "gpt-4.1": {"input": "2.00", "output": "8.00", "cached_input": "0.50"},
    "gpt-4.1-nano": {"input": "0.10", "output": "0.40", "cached_input": "0.025"},
    "offline-template-v1": {"input": "0", "output": "0", "cached_input": "0"},
}


@lru_cache(maxsize=8)
def _table(override: str) -> dict[str, dict[str, Decimal]]:
    table = {m: {k: Decimal(v) for k, v in p.items()} for m, p in DEFAULT_PRICES.items()}
    if override:
        text = Path(override).read_text() if not override.lstrip().startswith("{") else override
        for model, prices in json.loads(text).items():
            entry = table.setdefault(model, {"input": Decimal(0), "output": Decimal(0), "cached_input": Decimal(0)})
            entry.update({k: Decimal(str(v)) for k, v in prices.items()})
            entry.setdefault("cached_input", entry["input"])
    return table


def prices() -> dict[str, dict[str, Decimal]]:
    return _table(settings.REVIEWDESK_PRICES)


@lru_cache(maxsize=256)
def _warn_unpriced(model: str) -> None:
    log.warning("no price for model %r; its calls are recorded at 0 USD (set REVIEWDESK_PRICES)", model)


def price_for(model: str) -> dict[str, Decimal] | None:
    table = prices()
    if model in table:
        return table[model]
    # Providers report dated snapshots ("gpt-4o-mini-2024-07-18"): price them as their family.
    family = max((m for m in table if model.startswith(m + "-")), key=len, default=None)
    return table[family] if family else None


def cost_of(call: CallRecord) -> Decimal:
    model = call.model_reported or call.model_requested
    price = price_for(model) or price_for(call.model_requested)
    if price is None:
        if call.prompt_tokens or call.completion_tokens:
            _warn_unpriced(model)
        return Decimal(0)
    uncached = max(call.prompt_tokens - call.cached_tokens, 0)
    total = (
        uncached * price["input"]
        + call.cached_tokens * price.get("cached_input", price["input"])
        + call.completion_tokens * price["output"]
    )
    return (total / PER_TOKENS).quantize(Decimal("0.00000001"))
