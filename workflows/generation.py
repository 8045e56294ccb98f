"""From a claimed submission to a model completion: render the prompt, pick the engine."""
from __future__ import annotations

from .llm import client, offline
from .llm.prompts import render_prompt
from .llm.types import Completion
from .models import Submission


def produce_completion(submission: Submission) -> Completion:
    spec = submission.workflow_version.spec
    prompt = render_prompt(spec, submission.data, feedback=submission.regenerate_feedback)
    if client.engine_name() == offline.ENGINE:
        return offline.complete(spec, submission.data, prompt)
    return client.complete(spec, prompt)
