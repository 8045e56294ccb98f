"""What is happening to a request, in the submitter's words (DESIGN.md section 8, rule 12).

One function, so the submission page, the list and the home page say the same thing about the
same state. Never a code, a lane name, a score, a threshold, a hash or a provider's error text:
those are for reviewers and compliance, who get the facts on the same page below.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from .models import SubmissionState


@dataclass(frozen=True)
class PlainStatus:
    label: str  # a few words: "Drafting…", "Waiting for a reviewer"
    detail: str  # one or two sentences saying what it means for the reader
    tone: str  # "working", "waiting", "done", "problem", "withdrawn": the badge's colour
    working: bool = False  # the page should keep looking (spinner)


def plain_status(submission, *, review_due: datetime | None = None, offline: bool = False,
                 still_checked: bool = False) -> PlainStatus:
    """``review_due``: when the open blocking review is due (ReviewTask.due_at), if any.
    ``still_checked``: an open review after release (async lane or audit sample)."""
    state = submission.state
    if submission.retracted_at is not None and state in (SubmissionState.SUBMITTED, SubmissionState.GENERATING,
                                                          SubmissionState.REGENERATING):
        return PlainStatus(
            "Drafting again…",
            "The text released earlier was withdrawn and must not be used. A reviewer asked for a new draft; "
            "it is being written.",
            "working", working=True,
        )
    if submission.retracted_at is not None:
        return PlainStatus(
            "Withdrawn: do not use",
            "The text released earlier has been withdrawn after review and must not be used. Do not send "
            "or rely on it; if you have already passed it on, let the recipient know it is withdrawn.",
            "withdrawn",
        )
    if state == SubmissionState.SUBMITTED:
        return PlainStatus("Waiting to be drafted", "Your request is saved; drafting starts in a moment.",
                           "working", working=True)
    if state in (SubmissionState.GENERATING, SubmissionState.REGENERATING):
        by = " by the built-in offline drafter (no AI model is configured)" if offline else ""
        again = "A reviewer asked for a new draft; it is being written" if state == SubmissionState.REGENERATING \
            else "The draft is being written"
        return PlainStatus("Drafting…", f"{again}{by}.", "working", working=True)
    if state == SubmissionState.PAUSED:
        return PlainStatus("On hold", submission.paused_message, "waiting")
    if state == SubmissionState.FAILED:
        return PlainStatus("Could not be drafted", submission.failure_message, "problem")
    if state == SubmissionState.REJECTED:
        return PlainStatus("Not approved", "A reviewer did not approve the draft, so nothing was released.",
                           "problem")
    if state == SubmissionState.ROUTED and not submission.is_released:
        return PlainStatus("Waiting for a reviewer", _due_sentence(review_due), "waiting")
    if state == SubmissionState.ROUTED:
        return PlainStatus(
            "Released, a reviewer will check it later",
            "You can use the text below now. A colleague will also check it; if they withdraw it, this page "
            "will say so plainly.",
            "done",
        )
    if state == SubmissionState.APPROVED:
        detail = "The text below is final and ready to use."
        if still_checked:
            detail += " A colleague may still look at it as part of a routine check; this page would say if " \
                      "it were withdrawn."
        return PlainStatus("Approved", detail, "done")
    return PlainStatus(submission.get_state_display(), "", "waiting")


def _due_sentence(due: datetime | None) -> str:
    if due is None:
        return "A colleague will review this before it is released."
    local = timezone.localtime(due)
    when = local.strftime("%d %b %Y, %H:%M")
    if due < timezone.now():
        return (f"A colleague will review this before it is released. It was due by {when} and is "
                "still waiting for a colleague.")
    return f"A colleague will review this before it is released, by {when}."


# The submitter's history of a request: audit actions as sentences. Actions not listed (claims,
# lease renewals, exports) are steps of other people's work and are left out.
HISTORY_SENTENCES = {
    "submission.created": "You sent the request.",
    "submission.retried": "The request was sent for drafting again.",
    "draft.generation_started": "Drafting started.",
    "draft.generated": "A draft was written.",
    "draft.failed": "Drafting did not succeed.",
    "review.approved": "A reviewer approved the text.",
    "review.edited": "A reviewer corrected and approved the text.",
    "review.auto_approved": "The text was approved.",
    "review.rejected": "A reviewer did not approve the draft.",
    "review.regenerate_requested": "A reviewer asked for a new draft.",
    "output.released": "The text was released to you.",
    "output.retracted": "The released text was withdrawn: do not use it.",
    "generation.paused": "Drafting was put on hold.",
}


def plain_history(events) -> list[dict]:
    """``[{"time", "sentence"}]`` for the events a submitter is told about, oldest first; two
    identical sentences in a row (a retried start, say) are told once."""
    rows: list[dict] = []
    for event in events:
        sentence = HISTORY_SENTENCES.get(event.action)
        if sentence and not (rows and rows[-1]["sentence"] == sentence):
            rows.append({"time": event.created_at, "sentence": sentence})
    return rows
