"""The submitter's status in plain words (issue 8): every state says what is happening, and no
label or sentence carries a code, a lane, a score, a threshold or a provider's text. Pure."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from workflows.models import Lane, Submission, SubmissionState
from workflows.plain_status import HISTORY_SENTENCES, plain_history, plain_status

NOW = timezone.now()
TECHNICAL = re.compile(r"_|\d\.\d|score|lane|threshold|auto_approve|block_below|sha|hash|HTTP|routed", re.I)


def submission(state, **fields) -> Submission:
    return Submission(state=state, **fields)


CASES = [
    (submission(SubmissionState.SUBMITTED), "Waiting to be drafted", "working"),
    (submission(SubmissionState.GENERATING), "Drafting…", "working"),
    (submission(SubmissionState.REGENERATING), "Drafting…", "working"),
    (submission(SubmissionState.PAUSED), "On hold", "waiting"),
    (submission(SubmissionState.FAILED, failure_kind="provider_unavailable", failure_reason="HTTP 503: upstream"),
     "Could not be drafted", "problem"),
    (submission(SubmissionState.REJECTED, lane=Lane.BLOCKING_REVIEW), "Not approved", "problem"),
    (submission(SubmissionState.ROUTED, lane=Lane.BLOCKING_REVIEW), "Waiting for a reviewer", "waiting"),
    (submission(SubmissionState.ROUTED, lane=Lane.ASYNC_REVIEW, released_at=NOW),
     "Released, a reviewer will check it later", "done"),
    (submission(SubmissionState.APPROVED, lane=Lane.AUTO_APPROVE, released_at=NOW), "Approved", "done"),
    (submission(SubmissionState.REJECTED, lane=Lane.ASYNC_REVIEW, released_at=NOW, retracted_at=NOW),
     "Withdrawn: do not use", "withdrawn"),
    (submission(SubmissionState.REGENERATING, lane=Lane.ASYNC_REVIEW, released_at=NOW, retracted_at=NOW),
     "Drafting again…", "working"),
]


@pytest.mark.parametrize("sub, label, tone", CASES, ids=[c[1] + "-" + c[0].state for c in CASES])
def test_each_state_in_plain_words(sub, label, tone):
    status = plain_status(sub)
    assert (status.label, status.tone) == (label, tone)
    assert status.detail and not TECHNICAL.search(status.label + " " + status.detail), status
    assert status.working == (tone == "working")


def test_a_failure_never_shows_the_providers_text():
    status = plain_status(submission(SubmissionState.FAILED, failure_kind="provider_refused",
                                     failure_reason="HTTP 404: model gpt-x does not exist"))
    assert "404" not in status.detail and "does not exist" not in status.detail
    assert "refused the request" in status.detail


def test_a_withdrawn_text_says_it_must_not_be_used_even_while_drafted_again():
    for state in (SubmissionState.REJECTED, SubmissionState.REGENERATING):
        status = plain_status(submission(state, released_at=NOW, retracted_at=NOW))
        assert "must not be used" in status.detail


def test_the_blocking_review_says_when_it_is_due():
    due = NOW + timedelta(minutes=30)
    status = plain_status(submission(SubmissionState.ROUTED, lane=Lane.BLOCKING_REVIEW), review_due=due)
    assert status.detail == ("A colleague will review this before it is released, by "
                             f"{timezone.localtime(due).strftime('%d %b %Y, %H:%M')}.")
    late = plain_status(submission(SubmissionState.ROUTED, lane=Lane.BLOCKING_REVIEW),
                        review_due=NOW - timedelta(minutes=5))
    assert "was due by" in late.detail and "still waiting for a colleague" in late.detail


def test_the_offline_drafter_is_named_while_drafting():
    assert "offline drafter" in plain_status(submission(SubmissionState.GENERATING), offline=True).detail


def test_an_approved_text_still_in_a_routine_check_says_so():
    status = plain_status(submission(SubmissionState.APPROVED, released_at=NOW), still_checked=True)
    assert status.label == "Approved" and "routine check" in status.detail


class Event:
    def __init__(self, action, minute):
        self.action, self.created_at = action, NOW + timedelta(minutes=minute)


def test_the_history_tells_only_the_submitters_story_in_sentences():
    events = [Event(a, i) for i, a in enumerate([
        "submission.created", "draft.generation_started", "draft.generated", "draft.routed", "review.claimed",
        "review.lease_renewed", "review.edited", "output.released", "auth.denied"])]
    rows = plain_history(events)
    assert [r["sentence"] for r in rows] == [
        "You sent the request.", "Drafting started.", "A draft was written.",
        "A reviewer corrected and approved the text.", "The text was released to you."]
    assert all(not TECHNICAL.search(sentence) for sentence in HISTORY_SENTENCES.values())
