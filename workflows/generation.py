"""From a claimed submission to a model completion: redact, render the prompt, pick the
engine, restore."""
from __future__ import annotations

from .llm import client, offline, pii
from .llm.prompts import render_prompt
from .llm.types import UNRESOLVED_PLACEHOLDER, Completion
from .models import Submission


def produce_completion(submission: Submission) -> Completion:
    spec = submission.workflow_version.spec
    redaction = pii.redact(spec, submission.data)
    # The reviewer's feedback may quote the real values the reviewer sees; mask those too.
    prompt = render_prompt(spec, redaction.values, feedback=redaction.mask(submission.regenerate_feedback))
    if client.engine_name() == offline.ENGINE:
        completion = offline.complete(spec, redaction.values, prompt)
    else:
        completion = client.complete(spec, prompt)
    completion.content = pii.restore(completion.content, redaction, is_json=spec.output.format == "json")
    completion.redacted_fields = redaction.fields
    if unresolved := redaction.unresolved(completion.content):
        completion.findings[UNRESOLVED_PLACEHOLDER] = f"placeholders left in the answer: {', '.join(unresolved)}"
    return completion
