"""The generation pipeline end to end through the real worker: one submission per lane."""
import pytest

from tests.conftest import wait_for
from workflows import services
from workflows.models import Lane, Submission, SubmissionState


def _submit(demo, data):
    version = demo.version("customer-reply")
    return services.submission_create(version=version, user=demo.users["submitter"], data=data)


def _routed(pk):
    s = Submission.objects.get(pk=pk)
    return s if s.state not in (SubmissionState.SUBMITTED, SubmissionState.GENERATING) else None


@pytest.mark.parametrize(
    "marker, lane, state, released",
    [
        ("[[lane:auto]]", Lane.AUTO_APPROVE, SubmissionState.APPROVED, True),
        ("[[lane:async]]", Lane.ASYNC_REVIEW, SubmissionState.ROUTED, True),
        ("[[lane:blocking]]", Lane.BLOCKING_REVIEW, SubmissionState.ROUTED, False),
    ],
)
def test_each_lane_through_the_worker(worker, fake_model, demo, customer_reply_input, marker, lane, state, released):
    customer_reply_input["complaint"] += f" {marker}"
    submission = _submit(demo, customer_reply_input)
    done = wait_for(lambda: _routed(submission.pk), message="the worker to route the draft")
    assert done.lane == lane
    assert done.state == state
    assert done.is_released is released
    draft = done.latest_draft
    assert draft.engine == "openai" and draft.model == "gpt-4o-mini"
    assert draft.prompt_tokens > 0 and draft.completion_tokens > 0
    assert draft.score_components["certainty_source"] == "logprobs"
    # The worker asked the real provider API for what scoring needs.
    (request,) = fake_model.calls_for(marker)
    assert request["logprobs"] is True
    assert request["response_format"]["type"] == "json_schema"
    assert request["response_format"]["json_schema"]["schema"]["required"] == ["reply", "tone"]
