"""The draft as it is written, end to end (issue 8, section 3): the real worker streams from the
fake model (server-sent events) into Redis, the async view forwards it, and the rule holds that
a draft which ends held for blocking review is never shown to its submitter, streamed or not.
The unsafe cases come first."""
from __future__ import annotations

import json
import time

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from tests.conftest import CUSTOMER_REPLY_INPUT
from tests.unit.test_draft_stream_rule import streamable_definition
from workflows import draft_stream, services
from workflows.definitions import parse_definition
from workflows.models import Lane, Submission, SubmissionState

from .conftest import unique_marker, wait_routed

pytestmark = pytest.mark.services


@pytest.fixture
def streamable(demo):
    version, _ = services.workflow_publish(spec=parse_definition({**streamable_definition(), "cache": False}))
    return version


def _submit(demo, version, complaint: str) -> Submission:
    data = {**CUSTOMER_REPLY_INPUT, "complaint": complaint}
    return services.submission_create(version=version, user=demo.users["submitter"], data=data)


def _entries(redis_client, submission_id: int) -> list[dict]:
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _id, fields in redis_client.xrange(draft_stream.stream_key(submission_id))]


def _text(entries) -> str:
    return "".join(e.get("t", "") for e in entries if e["k"] == "text")


def _watch_until_routed(redis_client, submission_id: int) -> list[str]:
    """What a page could have read from the stream, every 50 ms, until the draft is routed."""
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen.append(_text(_entries(redis_client, submission_id)))
        if Submission.objects.get(pk=submission_id).state not in (SubmissionState.SUBMITTED,
                                                                   SubmissionState.GENERATING):
            return seen
        time.sleep(0.05)
    raise AssertionError("the draft was not routed in time")


def _sse(client, submission_id: int) -> str:
    response = client.get(f"/submissions/{submission_id}/stream/")
    if response.status_code == 204:
        return ""
    return b"".join(response.streaming_content).decode()


# --- unsafe first: a draft that ends blocked is never shown -------------------------------------


def test_a_draft_that_may_block_is_never_streamed_and_never_shown(worker, fake_model, demo, redis_client):
    # customer-reply can hold a draft for its score or a finding: its drafts are never streamed,
    # however slowly the model writes them.
    marker = unique_marker()
    submission = _submit(demo, demo.version("customer-reply"), f"Broken. {marker} [[lane:blocking]] [[stream-delay:0.05]]")
    seen = _watch_until_routed(redis_client, submission.pk)
    done = wait_routed(submission.pk)
    assert done.lane == Lane.BLOCKING_REVIEW and not done.is_released
    assert set(seen) == {""} and not redis_client.exists(draft_stream.stream_key(submission.pk))
    assert all("stream" not in body for body in fake_model.calls_for(marker))
    owner = Client()
    owner.force_login(demo.users["submitter"])
    page = owner.get(f"/submissions/{submission.pk}/").content.decode()
    assert done.latest_draft.content not in page and "Dear" not in page
    assert 'id="draft-stream-card"' not in page
    assert owner.get(f"/submissions/{submission.pk}/stream/").status_code == 204


def test_a_held_workflow_streams_nothing_even_if_it_could(worker, fake_model, demo, streamable, redis_client):
    services.workflow_hold(workflow_id=streamable.workflow_id, kind="stopped", reason="Checking the new model.",
                           actor=demo.users["wfadmin"])
    marker = unique_marker()
    submission = _submit(demo, streamable, f"Broken. {marker} [[plain]] [[stream-delay:0.05]]")
    seen = _watch_until_routed(redis_client, submission.pk)
    assert wait_routed(submission.pk).lane == Lane.BLOCKING_REVIEW
    assert set(seen) == {""} and not redis_client.exists(draft_stream.stream_key(submission.pk))


def test_a_streamed_draft_cut_at_max_tokens_is_withdrawn_from_the_page(worker, fake_model, demo, streamable,
                                                                       redis_client):
    """The one case the rule cannot foresee (docs/ARCHITECTURE.md): the length stop comes with
    the last token. The draft is held, the stream ends, and the page no longer shows its text."""
    marker = unique_marker()
    submission = _submit(demo, streamable, f"Broken. {marker} [[plain]] [[finish:length]]")
    done = wait_routed(submission.pk)
    assert done.lane == Lane.BLOCKING_REVIEW and "truncated" in done.latest_draft.findings
    entries = _entries(redis_client, submission.pk)
    assert entries[-1]["k"] == "end"
    owner = Client()
    owner.force_login(demo.users["submitter"])
    page = owner.get(f"/submissions/{submission.pk}/").content.decode()
    assert done.latest_draft.content not in page and 'id="draft-stream-card"' not in page
    assert "A colleague will review this" in page
    # A page opened now gets nothing from the stream either (the draft is no longer drafting).
    assert owner.get(f"/submissions/{submission.pk}/stream/").status_code == 204


# --- a workflow that releases without blocking: the text arrives as it is written ---------------


def test_the_worker_streams_the_draft_as_the_model_writes_it(worker, fake_model, demo, streamable, redis_client):
    marker = unique_marker()
    submission = _submit(demo, streamable, f"Broken. {marker} [[plain]] [[stream-delay:0.08]]")
    seen = _watch_until_routed(redis_client, submission.pk)
    done = wait_routed(submission.pk)
    # Auto-approved and released: what was streamed is what was released, word for word.
    assert done.lane == Lane.AUTO_APPROVE and done.is_released
    entries = _entries(redis_client, submission.pk)
    assert [e["k"] for e in entries][0] == "start" and entries[-1]["k"] == "end"
    assert _text(entries) == done.final_output and done.final_output.startswith("Dear ")
    # The text grew while the draft was being written: several different, growing prefixes.
    growing = [s for i, s in enumerate(seen) if s and (i == 0 or s != seen[i - 1])]
    assert len(growing) >= 3, seen
    assert all(later.startswith(earlier) for earlier, later in zip(growing, growing[1:]))
    # Streaming kept certainty and cost: the score came from token logprobs, tokens were counted.
    (request,) = fake_model.calls_for(marker)
    assert request["stream"] is True and request["logprobs"] is True
    draft = done.latest_draft
    assert draft.score_components.get("certainty_source") == "logprobs", draft.score_components
    assert draft.completion_tokens > 0


# The tests below run in one rolled-back transaction (``demo``'s ``db``): their submissions are
# never committed, so the session's real worker (started by the tests above) never drafts them
# while the test ends and its tables are flushed (a TRUNCATE racing the worker's writes
# deadlocked in CI).
def test_the_async_view_forwards_the_stream_as_server_sent_events(demo, streamable, redis_client):
    submission = _submit(demo, streamable, "Broken parcel.")
    services.generation_claim(submission_id=submission.pk)  # attempt 1, generating
    old = draft_stream.RedisDraftSink(submission.pk, 0)
    old.start()
    old.write("an earlier attempt's words")
    sink = draft_stream.RedisDraftSink(submission.pk, 1)
    sink.start()
    for piece in ("Dear Ann, ", "thank you ", "for writing."):
        sink.write(piece)
    sink.finish()

    async def read():
        client = AsyncClient()
        await client.aforce_login(demo.users["submitter"])
        response = await client.get(f"/submissions/{submission.pk}/stream/")
        assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
        assert response["Cache-Control"] == "no-cache"
        return b"".join([chunk async for chunk in response.streaming_content]).decode()

    # async_to_sync: the view's database work runs in this thread, on this test's connection.
    body = async_to_sync(read)()
    events = [block for block in body.split("\n\n") if block.strip()]
    kinds = [next((line[7:] for line in e.splitlines() if line.startswith("event: ")), None) for e in events]
    assert kinds == [None, "reset", "text", "text", "text", "end"], body
    texts = [json.loads(e.splitlines()[-1][6:])["t"] for e in events if "event: text" in e]
    assert "".join(texts) == "Dear Ann, thank you for writing."
    assert "earlier attempt" not in body
    # Each event has the stream id, so a reconnecting EventSource resumes where it stopped.
    assert all(e.startswith("id: ") for e in events[1:])


def test_the_page_offers_the_stream_only_while_a_streamable_draft_is_written(demo, streamable):
    submission = _submit(demo, streamable, "Broken parcel.")
    owner = Client()
    owner.force_login(demo.users["submitter"])
    page = owner.get(f"/submissions/{submission.pk}/").content.decode()
    assert f'data-stream-url="/submissions/{submission.pk}/stream/"' in page
    other = _submit(demo, demo.version("customer-reply"), "Broken parcel.")
    assert "data-stream-url" not in owner.get(f"/submissions/{other.pk}/").content.decode()


def test_without_redis_the_page_polls_and_the_worker_streams_nothing(demo, streamable, settings):
    settings.REDIS_URL = ""
    submission = _submit(demo, streamable, "Broken parcel.")
    owner = Client()
    owner.force_login(demo.users["submitter"])
    page = owner.get(f"/submissions/{submission.pk}/").content.decode()
    assert "data-stream-url" not in page and 'hx-trigger="every 2s"' in page
    assert owner.get(f"/submissions/{submission.pk}/stream/").status_code == 204
    from workflows.tasks import draft_sink

    assert draft_sink(Submission.objects.get(pk=submission.pk), 1) is None


def test_a_streamed_submission_outside_ones_scope_is_404(demo, streamable, make_user):
    submission = _submit(demo, streamable, "Broken parcel.")
    stranger = Client()
    stranger.force_login(make_user("stranger", "submitter"))
    assert stranger.get(f"/submissions/{submission.pk}/stream/").status_code == 404
