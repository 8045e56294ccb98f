"""Helpers for JSON-like values (dicts, lists, strings, numbers) as they come from json.loads."""
from __future__ import annotations

from typing import Any, Callable


def map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """Apply ``fn`` to every string in ``value``, dict keys included; other values unchanged."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {map_strings(k, fn): map_strings(v, fn) for k, v in value.items()}
    return value
