"""Fixtures the openai engine's test modules share: one threaded fake server per module and a model
name no other test uses, so breaker and parameter memory start empty for each test."""
from __future__ import annotations

import uuid

import pytest

from tests.fake_openai import serving
from workflows.pipeline.engines.openai import reset_provider_state

# Properties deliberately not in alphabetical order: the prompt must keep the author's order.
SCHEMA = {
    "type": "object",
    "required": ["tone", "reply"],
    "properties": {"tone": {"type": "string", "enum": ["apologetic", "neutral"]}, "reply": {"type": "string"}},
}


@pytest.fixture(scope="module")
def server():
    with serving() as model:
        yield model
        reset_provider_state(model.base_url)  # leave no breaker or memory keys in Redis


@pytest.fixture
def model_name():
    """A model name no other test uses: its breaker starts closed and nothing is remembered."""
    return f"m-{uuid.uuid4().hex[:10]}"
