"""Fixtures for the unit tests: the demo workflow definitions as data and as parsed specs."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

DEMO_DIR = Path(__file__).resolve().parents[2] / "workflows" / "demo_workflows"
DEMO_SLUGS = ("customer-reply", "compliance-report", "underwriting-memo")


def demo_yaml(slug: str) -> str:
    return (DEMO_DIR / f"{slug}.yaml").read_text(encoding="utf-8")


@pytest.fixture
def demo_data():
    """A fresh, mutable dict of a demo definition: ``demo_data("customer-reply")``."""

    def load(slug: str = "customer-reply") -> dict:
        return copy.deepcopy(yaml.safe_load(demo_yaml(slug)))

    return load


@pytest.fixture
def demo_spec():
    """A parsed demo definition: ``demo_spec("underwriting-memo")``."""
    from workflows.definitions import parse_yaml

    return lambda slug="customer-reply": parse_yaml(demo_yaml(slug))
