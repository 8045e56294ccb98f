"""One Redis reader per web process for every page watching a draft (views/stream.py).

Each watching page used to open its own Redis client and wait in its own ``XREAD BLOCK``: N
pages, N connections and N blocked reads per process. Here a process has one hub per event loop
(uvicorn runs one loop per worker process): a reader task waits in one ``XREAD BLOCK`` over every
watched stream and hands the entries to each page's ``asyncio.Queue``. So a process holds two
Redis connections whatever the number of pages (the reader's, and one for the wake-ups below),
and a page still gets an entry as soon as Redis has it. docs/ARCHITECTURE.md ("Streaming drafts
to the submitter", "One reader per process") has the measurements behind the choice.

A page that starts watching while the reader is blocked must not wait for the block to time
out: it adds an entry to the hub's own wake stream, which that same ``XREAD`` also waits on.
(A stream rather than ``CLIENT UNBLOCK``: an entry added before the read reached Redis still
wakes it, since the read asks for entries after the last one it saw.)

Positions are per page: two tabs on one submission, or a page resuming with Last-Event-ID, read
the same stream from different entries. The reader reads each stream from the earliest position
any of its pages needs and gives each page only what is newer than its own.
"""
from __future__ import annotations

import asyncio
import logging
import uuid

from django.conf import settings

log = logging.getLogger(__name__)

# How long one read waits for new entries. Nothing waits on this timeout (new pages wake the
# reader); it only bounds how long a connection is silent, and how soon a read notices a page
# that left (its stream is then dropped from the next read).
BLOCK_MS = 1000
# Entries per stream per read: a stream with more simply continues at the next read.
COUNT = 200
# After a read that brought text, the reader waits this long before the next one. An XREAD
# costs Redis time for every stream it names, and while drafts are written some stream has a
# new entry almost at once: without the pause the reader would ask again after each single
# XADD (tests/bench/bench_sse.py, 200 pages: 578 reads of 200 streams, 115 ms of Redis time, for
# drafts of 20 pieces). With it, entries of many streams come in one read, at most 50 reads a
# second, for 20 ms more before a piece reaches its page, which no reader can see.
COALESCE_SECONDS = 0.02
# The reader's connection and one for wake-ups. A wake-up while another is still on its way
# waits for the connection (BlockingConnectionPool), it never opens a third.
POOL_SIZE = 2
# After a Redis error every page of the moment is ended (it polls); the reader waits this long
# before it reads again for pages that come later.
RETRY_SECONDS = 1.0


class Watch:
    """One page's subscription: its stream, its position in it, and the entries for it.

    The queue receives lists of ``(entry_id: bytes, fields: dict)``, or ``Hub.BROKEN`` when Redis
    failed; it is unbounded because what can arrive is bounded by the stream (capped, see
    draft_stream.STREAM_MAXLEN), and the page's own connection paces how fast it is emptied.
    """

    __slots__ = ("key", "position", "queue")

    def __init__(self, key: str, position: str):
        self.key = key
        self.position = parse_id(position)
        self.queue: asyncio.Queue = asyncio.Queue()


def parse_id(value: str | bytes) -> tuple[int, int]:
    if isinstance(value, bytes):
        value = value.decode()
    left, _, right = value.partition("-")
    return int(left), int(right or 0)


class Hub:
    BROKEN = object()

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop):
        import redis.asyncio as aioredis

        self.url = url
        self.loop = loop
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=POOL_SIZE, timeout=BLOCK_MS / 1000 + 5,
            socket_timeout=BLOCK_MS / 1000 + 5, socket_connect_timeout=5, health_check_interval=30,
        )
        self.client = aioredis.Redis(connection_pool=pool)
        self.watches: dict[str, set[Watch]] = {}
        self.count = 0
        self.wake_key = f"{settings.REVIEWDESK_NAMESPACE}reviewdesk:draft-stream-wake:{uuid.uuid4().hex}"
        self.wake_position = "0-0"
        self.reading = False  # a read of the current watches is on its way to Redis or blocked there
        self.woken = False  # and a wake-up for it has been sent
        self.changed = asyncio.Event()
        self.reader: asyncio.Task | None = None
        self.wakers: set[asyncio.Task] = set()

    def full(self) -> bool:
        """As many pages as one process serves (REVIEWDESK_SSE_MAX_WATCHERS): the next polls."""
        return self.count >= settings.REVIEWDESK_SSE_MAX_WATCHERS

    def watch(self, key: str, position: str) -> Watch | None:
        """Start delivering the stream ``key`` after ``position``; None when the hub is full."""
        if self.full():
            return None
        watch = Watch(key, position)
        self.watches.setdefault(key, set()).add(watch)
        self.count += 1
        if self.reader is None or self.reader.done():
            self.reader = self.loop.create_task(self._read_forever())
        self.changed.set()
        if self.reading and not self.woken:
            self.woken = True
            waker = self.loop.create_task(self._wake())
            self.wakers.add(waker)
            waker.add_done_callback(self.wakers.discard)
        return watch

    def release(self, watch: Watch) -> None:
        """The page has gone (or finished): the next read leaves its stream out. Idempotent."""
        watches = self.watches.get(watch.key)
        if watches is None or watch not in watches:
            return
        watches.discard(watch)
        self.count -= 1
        if not watches:
            del self.watches[watch.key]

    async def _wake(self) -> None:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.xadd(self.wake_key, {"w": "1"}, maxlen=10, approximate=False)
                pipe.expire(self.wake_key, 60)
                await pipe.execute()
        except Exception:  # noqa: BLE001 - without the wake-up the page waits one BLOCK_MS at most
            log.warning("draft stream hub: wake-up failed", exc_info=True)

    async def _read_forever(self) -> None:
        try:
            while True:
                if not self.watches:
                    self.changed.clear()
                    await self.changed.wait()
                    continue
                streams = {key: "%d-%d" % min(w.position for w in watches) for key, watches in self.watches.items()}
                streams[self.wake_key] = self.wake_position
                self.reading, self.woken = True, False
                try:
                    batches = await self.client.xread(streams, block=BLOCK_MS, count=COUNT)
                except Exception:  # noqa: BLE001 - the pages poll; say why in the log
                    log.warning("draft stream hub: Redis read failed; %d pages fall back to polling",
                                self.count, exc_info=True)
                    self._end_all()
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                finally:
                    self.reading = False
                if self._deliver(batches or ()):
                    await asyncio.sleep(COALESCE_SECONDS)
        finally:
            self._end_all()
            await self.close()

    def _deliver(self, batches) -> bool:
        """Hand the entries read to the pages that wait for them; True if there was any."""
        delivered = False
        for raw_key, entries in batches:
            key = raw_key.decode()
            if key == self.wake_key:
                self.wake_position = entries[-1][0].decode()
                continue
            for watch in tuple(self.watches.get(key, ())):
                fresh = [(entry_id, fields) for entry_id, fields in entries if parse_id(entry_id) > watch.position]
                if fresh:
                    watch.position = parse_id(fresh[-1][0])
                    watch.queue.put_nowait(fresh)
                    delivered = True
        return delivered

    def _end_all(self) -> None:
        for watches in self.watches.values():
            for watch in watches:
                watch.queue.put_nowait(self.BROKEN)
        self.watches.clear()
        self.count = 0

    async def close(self) -> None:
        try:
            await self.client.aclose()
            await self.client.connection_pool.disconnect()
        except Exception:  # noqa: BLE001 - closing on the way out; nothing left to tell
            log.debug("draft stream hub: close failed", exc_info=True)


_hubs: dict[int, Hub] = {}


def current_hub() -> Hub:
    """This event loop's hub, made on first use. Keyed by loop because a Redis connection
    belongs to the loop that opened it: the tests run each async test in a loop of its own,
    whose hub (and connections) must not be reused once that loop is closed."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(id(loop))
    if hub is None or hub.loop is not loop or hub.url != settings.REDIS_URL:
        for key, other in list(_hubs.items()):
            if other.loop.is_closed():
                del _hubs[key]
        hub = _hubs[id(loop)] = Hub(settings.REDIS_URL, loop)
    return hub
