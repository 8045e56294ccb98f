"""Drafts shown to their submitter while the model writes them (issue 8, section 3).

Who may see a draft before routing has decided its lane is the question here; the answer is
``streams_to_submitter`` (docs/ARCHITECTURE.md "Streaming drafts to the submitter" gives the
reasoning). In short: the lane is known only after the whole answer is scored, so a draft may
be shown while it is written only when nothing in its text can send it to blocking review or
give it a finding the submitter must not see. That is a property of the workflow's definition
(and of its automation hold at the start), never of a guess about this one draft.

Transport: the worker appends the text as it comes to a Redis stream per submission
(``XADD``, capped and expiring), and the web's async view (views/stream.py) reads it with
``XREAD BLOCK`` and forwards it as server-sent events. A stream, not pub/sub, so that a browser
that connects late (or reconnects) gets the text written so far, not only what comes next.
Without Redis (the embedded default of `make run`) nothing is published: the page polls.
"""
from __future__ import annotations

import logging

from django.conf import settings

from .definitions import WorkflowDefinition

log = logging.getLogger(__name__)

# A stream outlives its draft by this long: a page opened just after the draft finished still
# finds the "end" entry and switches to the routed state at once.
STREAM_TTL_SECONDS = 300
# Entries kept per stream: each is a delta of a few tokens; a long draft fits many times over.
STREAM_MAXLEN = 20000


def streams_to_submitter(spec: WorkflowDefinition, *, automation_hold: bool = False) -> bool:
    """May drafts of this workflow be shown to their submitter while they are written?

    Only when routing cannot hold them for a person because of what they say, and no finding
    about their content can arise that the submitter must not see first:

    - no automation hold (a held workflow blocks every draft);
    - ``routing.block_below`` is 0 (no score is below it) and ``always_block_on`` is empty;
    - no ``routing.hold_rules``: a request matching one is held for blocking review whatever
      the draft says. (Whether one matches is known before drafting, but the stream view
      answers from the definition alone, so a workflow with hold rules never streams.)
    - no QA grading and no cascade (either may replace the text or add a blocking finding
      once the first answer is complete);
    - plain text output (a JSON answer is repaired when it breaks the schema, and raw JSON
      is not something to show a business user);
    - ``pii: allow`` and no field marked ``pii: true``: nothing is redacted, so there is no
      placeholder to restore or leave unresolved, and no personal-data detector runs whose
      finding would arrive only at the end.

    What remains is a draft cut off at ``max_tokens`` (known with its last token): see
    docs/ARCHITECTURE.md for why that one case is withdrawn from the page rather than
    prevented.
    """
    routing = spec.routing
    return (
        not automation_hold
        and routing.block_below <= 0
        and not routing.always_block_on
        and not routing.hold_rules
        and spec.qa is None
        and not spec.model.escalate_to
        and spec.output.format == "text"
        and spec.pii == "allow"
        and not any(f.pii for f in spec.form.all_fields())
    )


def automation_held(workflow_id: int) -> bool:
    """Is the workflow's automation held now (an admin stopped it, the quality monitor paused
    it)? Then routing blocks every draft, so none may be shown while written."""
    from .models import Workflow

    return Workflow.objects.filter(pk=workflow_id).exclude(automation_hold="").exists()


def available() -> bool:
    """Is there a Redis to carry the text? (No: the page polls.)"""
    return bool(settings.REDIS_URL)


def stream_key(submission_id: int) -> str:
    return f"{settings.REVIEWDESK_NAMESPACE}reviewdesk:draft-stream:{submission_id}"


class RedisDraftSink:
    """What the engines write a draft's text to (``pipeline.types.TextSink``), for one attempt.

    ``start()`` opens a new answer (a retried request starts over, so the page drops what it
    had), ``write(delta)`` appends, ``finish(outcome)`` tells the page the draft is done. A
    Redis failure never fails the draft: the text is only a preview, and the page polls anyway.
    """

    def __init__(self, submission_id: int, attempt: int, client=None):
        self.key = stream_key(submission_id)
        self.attempt = str(attempt)
        self._client = client
        self.broken = False

    def _redis(self):
        if self._client is None:
            from .pipeline.engines.breaker import shared_redis

            self._client = shared_redis(settings.REDIS_URL)
        return self._client

    def _add(self, fields: dict) -> None:
        if self.broken:
            return
        try:
            client = self._redis()
            pipe = client.pipeline(transaction=False)
            pipe.xadd(self.key, {"a": self.attempt, **fields}, maxlen=STREAM_MAXLEN, approximate=True)
            pipe.expire(self.key, STREAM_TTL_SECONDS)
            pipe.execute()
        except Exception:  # noqa: BLE001 - a preview must never cost the draft
            log.warning("draft stream %s: Redis write failed; the page falls back to polling", self.key,
                        exc_info=True)
            self.broken = True

    def start(self) -> None:
        self._add({"k": "start"})

    def write(self, delta: str) -> None:
        if delta:
            self._add({"k": "text", "t": delta})

    def finish(self) -> None:
        self._add({"k": "end"})
