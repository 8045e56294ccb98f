"""Pages watching drafts share one Redis reader per web process (workflows/draft_stream_hub.py):
many pages in one uvicorn process cost the hub's few Redis connections and each still gets its
own text; a page that goes away gives its place back; past REVIEWDESK_SSE_MAX_WATCHERS a page is
told 503 and polls. Real uvicorn process, real Redis, committed data (the server reads them)."""
from __future__ import annotations

import asyncio
import json
import os
import time

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test import Client

from tests.bench.bench_sse import redis_sockets
from tests.conftest import CUSTOMER_REPLY_INPUT
from tests.fault_rig import free_port, start_uvicorn, stop
from tests.unit.test_draft_stream_rule import streamable_definition
from workflows import draft_stream, draft_stream_hub, services
from workflows.definitions import parse_definition

pytestmark = pytest.mark.services

REDIS_PORT = int(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379").split("//", 1)[1].split("/")[0]
                 .rsplit(":", 1)[-1] or 6379)


@pytest.fixture
def start_server(transactional_db, tmp_path):
    """Start uvicorn (reviewdesk.asgi, as gunicorn's uvicorn workers run it) on this run's test
    database and Redis namespace, with extra environment; stopped when the test ends."""
    started = []

    def start(**extra_env) -> tuple[str, int]:
        url, proc = start_uvicorn(tmp_path / f"uvicorn-{len(started)}.log", **extra_env)
        started.append(proc)
        return url, proc.pid

    yield start
    for proc in started:
        stop(proc, timeout=15)
    connection.close()


@pytest.fixture
def drafting(demo):
    """Make n submissions of a streamable workflow, each in its first attempt ("generating"),
    and a session cookie of their submitter."""
    version, _ = services.workflow_publish(spec=parse_definition({**streamable_definition(), "cache": False}))

    def make(n: int) -> tuple[list[int], str]:
        pks = []
        for _ in range(n):
            submission = services.submission_create(version=version, user=demo.users["submitter"],
                                                    data=CUSTOMER_REPLY_INPUT)
            assert services.generation_claim(submission_id=submission.pk).attempts == 1
            pks.append(submission.pk)
        client = Client()
        client.force_login(demo.users["submitter"])
        return pks, client.cookies["sessionid"].value

    return make


class Page:
    """One watching page: its SSE connection, what it read, and when it was answered."""

    def __init__(self, client: httpx.AsyncClient, base: str, pk: int):
        self.pk = pk
        self.status = 0
        self.body = ""
        self.events: list[tuple[str, str]] = []
        self.answered = asyncio.Event()
        self.task = asyncio.create_task(self._read(client, base))

    async def _read(self, client, base):
        try:
            async with client.stream("GET", f"{base}/submissions/{self.pk}/stream/") as response:
                self.status = response.status_code
                if response.status_code != 200:
                    self.body = (await response.aread()).decode()
                    return
                event = None
                async for line in response.aiter_lines():
                    if line.startswith("retry:"):
                        self.answered.set()
                    elif line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        self.events.append((event, line[6:]))
                        if event == "end":
                            return
        finally:
            self.answered.set()

    @property
    def text(self) -> str:
        return "".join(json.loads(data)["t"] for event, data in self.events if event == "text")


def _client(session: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(cookies={"sessionid": session}, timeout=httpx.Timeout(30.0),
                             limits=httpx.Limits(max_connections=200, max_keepalive_connections=0))


def test_many_pages_in_one_process_share_the_hubs_redis_connections(start_server, drafting):
    pks, session = drafting(30)
    base, pid = start_server()
    connection.close()  # the server reads the committed rows; this test only writes to Redis
    peak = []

    async def watch_all():
        async with _client(session) as client:
            pages = [Page(client, base, pk) for pk in pks]
            await asyncio.wait_for(asyncio.gather(*(p.answered.wait() for p in pages)), 30)
            assert [p.status for p in pages] == [200] * len(pages)
            peak.append(redis_sockets(pid, REDIS_PORT))
            sinks = [draft_stream.RedisDraftSink(pk, 1) for pk in pks]
            for sink in sinks:
                sink.start()
            for word in ("Dear ", "customer ", "number "):
                for pk, sink in zip(pks, sinks):
                    sink.write(word)
                await asyncio.sleep(0.05)
                peak.append(redis_sockets(pid, REDIS_PORT))
            for pk, sink in zip(pks, sinks):
                sink.write(str(pk))
                sink.finish()
            await asyncio.wait_for(asyncio.gather(*(p.task for p in pages)), 30)
            return pages

    pages = async_to_sync(watch_all)()
    # 30 pages, each had its own text and its end, through at most the hub's pool of connections.
    assert [p.text for p in pages] == [f"Dear customer number {pk}" for pk in pks]
    assert all(p.events[0][0] == "reset" and p.events[-1][0] == "end" for p in pages)
    assert 1 <= max(peak) <= draft_stream_hub.POOL_SIZE, peak


def test_a_page_that_goes_away_gives_its_place_back(start_server, drafting):
    (first, second, third, fourth), session = drafting(4)
    base, _pid = start_server(REVIEWDESK_SSE_MAX_WATCHERS="2")
    connection.close()

    async def scenario():
        async with _client(session) as client:
            leaving, staying = Page(client, base, first), Page(client, base, second)
            await asyncio.wait_for(asyncio.gather(leaving.answered.wait(), staying.answered.wait()), 30)
            assert (leaving.status, staying.status) == (200, 200)
            # Two pages watch: the process is full, the next page is told so and polls.
            refused = Page(client, base, third)
            await asyncio.wait_for(refused.task, 30)
            assert refused.status == 503 and "checks for the result" in refused.body
            # The first page's browser goes away (tab closed): its connection drops, nothing ends.
            leaving.task.cancel()
            await asyncio.gather(leaving.task, return_exceptions=True)
            deadline = time.monotonic() + 10
            while True:
                later = Page(client, base, fourth)
                await asyncio.wait_for(later.answered.wait(), 30)
                if later.status == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            # Its place went to a new page, which gets its text as the other one does.
            assert later.status == 200
            for pk in (second, fourth):
                sink = draft_stream.RedisDraftSink(pk, 1)
                sink.start()
                sink.write(f"text {pk}")
                sink.finish()
            await asyncio.wait_for(asyncio.gather(staying.task, later.task), 30)
            assert (staying.text, later.text) == (f"text {second}", f"text {fourth}")
            # Pages that read their "end" leave too: two new pages fit again.
            again = [Page(client, base, pk) for pk in (first, third)]
            await asyncio.wait_for(asyncio.gather(*(p.answered.wait() for p in again)), 30)
            assert [p.status for p in again] == [200, 200]
            for page in again:
                page.task.cancel()
            await asyncio.gather(*(p.task for p in again), return_exceptions=True)

    async_to_sync(scenario)()


def test_pages_on_one_stream_each_read_from_their_own_position(redis_client):
    """Two tabs on one submission, one resuming after an event it had (Last-Event-ID): the one
    reader reads from the earlier position and gives each page only what is new to it; a page
    that starts watching while the reader waits is served at once, not after the read's block."""
    submission_id = 10**9 + os.getpid() % 1000  # a stream key of this run's namespace only
    key = draft_stream.stream_key(submission_id)
    sink = draft_stream.RedisDraftSink(submission_id, 1)
    sink.start()
    sink.write("one ")
    second_id = redis_client.xrevrange(key, count=1)[0][0].decode()
    sink.write("two ")

    async def read():
        hub = draft_stream_hub.current_hub()
        other = hub.watch(draft_stream.stream_key(submission_id + 1), "0-0")  # the reader now blocks
        await asyncio.sleep(0.2)
        assert hub.reading
        started = time.monotonic()
        fresh = hub.watch(key, "0-0")
        resumed = hub.watch(key, second_id)
        got_fresh = await asyncio.wait_for(fresh.queue.get(), 5)
        got_resumed = await asyncio.wait_for(resumed.queue.get(), 5)
        waited = time.monotonic() - started
        for watch in (other, fresh, resumed):
            hub.release(watch)
        hub.release(fresh)  # twice: harmless
        assert hub.count == 0 and not hub.watches
        return got_fresh, got_resumed, waited

    got_fresh, got_resumed, waited = async_to_sync(read)()
    assert [f[b"k"] for _id, f in got_fresh] == [b"start", b"text", b"text"]
    assert [f[b"t"] for _id, f in got_resumed] == [b"two "]
    assert waited < draft_stream_hub.BLOCK_MS / 1000 / 2, waited
    redis_client.delete(key)


def test_when_redis_fails_the_pages_are_ended_and_poll(demo, settings, caplog):
    """The reader's XREAD fails (Redis gone): every page of the moment gets "end" (its polling
    carries on) and the log says why, once for all of them."""
    version, _ = services.workflow_publish(spec=parse_definition({**streamable_definition(), "cache": False}))
    submission = services.submission_create(version=version, user=demo.users["submitter"], data=CUSTOMER_REPLY_INPUT)
    services.generation_claim(submission_id=submission.pk)
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there

    async def read():
        from django.test import AsyncClient

        client = AsyncClient()
        await client.aforce_login(demo.users["submitter"])
        response = await client.get(f"/submissions/{submission.pk}/stream/")
        assert response.status_code == 200
        return b"".join([chunk async for chunk in response.streaming_content]).decode()

    started = time.monotonic()
    body = async_to_sync(read)()
    assert body == "retry: 3000\n\nevent: end\ndata: {}\n\n"
    assert time.monotonic() - started < 10
    assert any("Redis read failed" in r.getMessage() for r in caplog.records)
