"""Prompt rendering from validated form values.

Plain placeholder substitution, not the Django template engine: prompts are not HTML, so no
escaping, and no template tags a workflow author could use to reach into the app.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..definitions import PLACEHOLDER_RE, WorkflowDefinition


@dataclass(frozen=True)
class RenderedPrompt:
    system: str
    user: str


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(as_text(v) for v in value)
    return str(value)


NOT_GIVEN = "not given"


def _slot(value: Any) -> str:
    # An optional field left empty reads "not given" in the prompt, not as an empty slot
    # ("Order value: ." reads like a typo the model may try to fix).
    text = as_text(value)
    return text if text.strip() else NOT_GIVEN


def render_template(template: str, values: dict[str, Any]) -> str:
    # Unknown placeholders were refused at publish time; .get keeps a stray one harmless.
    return PLACEHOLDER_RE.sub(lambda m: _slot(values.get(m.group(1))), template)


def render_prompt(spec: WorkflowDefinition, values: dict[str, Any], *, feedback: str = "") -> RenderedPrompt:
    # The definition may place {{ feedback }} in either part; wherever it is not placed, the
    # feedback is appended to the user message so a regeneration never silently drops it.
    context = {**values, "feedback": feedback}
    user = render_template(spec.prompt.user, context)
    system = render_template(spec.prompt.system, context)
    if feedback and "feedback" not in PLACEHOLDER_RE.findall(spec.prompt.system + spec.prompt.user):
        user += f"\n\nA reviewer sent the previous draft back with this feedback; address it:\n{feedback}"
    if spec.output.format == "json":
        system = (system + "\n\nAnswer with a single JSON object that matches the given schema.").strip()
    return RenderedPrompt(system=system, user=user)
