"""Server-sent events of drafts being written: Redis connections and first-token latency with N
watchers on one ASGI process (not part of `make bench`; about 30 s).

    python -m tests.bench.bench_sse [--watchers 200] [--tokens 20] [--token-interval 0.05]
                                    [--server-root DIR]

It creates its own database (reviewdesk_bench_sse_<pid> on BENCH_PG_URL's server, migrated,
seeded, dropped), uses BENCH_REDIS_URL (default db 11) with REVIEWDESK_NAMESPACE=benchsse<pid>.,
publishes the streamable workflow of the tests, makes N submissions in "generating", and starts
one uvicorn process (reviewdesk.asgi, as the tests and gunicorn's uvicorn workers run it). Then:

1. N watchers (httpx, one connection each) open /submissions/<pk>/stream/ at once, each for its
   own submission, and wait until the server has answered (the "retry" line);
2. the Redis connections of the uvicorn process are counted (its TCP sockets to the Redis port,
   from /proc: exact whatever else uses this Redis), idle and while everyone watches;
3. this process writes each draft as the Celery worker does (draft_stream.RedisDraftSink):
   "start", --tokens text pieces every --token-interval seconds to every stream in turn, "end";
4. each watcher's first-token latency is the time from the XADD of its first piece to the
   moment its client read the "text" event; each checks it read the whole text.

--server-root runs the server from another checkout (e.g. the code before a change, exported
with `git archive <commit> | tar -x -C DIR`), with this checkout's bench and virtualenv.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.bench.run_bench import DEFAULT_PG_URL, DEFAULT_REDIS_URL, pct, pids_cpu, say, with_db  # noqa: E402


def redis_sockets(pid: int, redis_port: int) -> int:
    """Established TCP connections from process ``pid`` to the Redis port (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == redis_port and fields[3] == "01":
                inodes.add(fields[9])
    count = 0
    for fd in os.scandir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(fd.path)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            count += 1
    return count


def xread_stats(url: str) -> tuple[int, int]:
    """Calls of XREAD and the microseconds Redis spent in them, since its start (all clients)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats").get("cmdstat_xread", {})
    finally:
        client.close()
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


class Watcher:
    def __init__(self, pk: int):
        self.pk = pk
        self.status = 0
        self.connected = asyncio.Event()
        self.first_text_at: float | None = None
        self.text = ""
        self.ended = False
        self.error = ""

    async def run(self, client, base: str) -> None:
        import json

        try:
            async with client.stream("GET", f"{base}/submissions/{self.pk}/stream/") as response:
                self.status = response.status_code
                if response.status_code != 200:
                    self.connected.set()
                    return
                event = None
                async for line in response.aiter_lines():
                    if line.startswith("retry:"):
                        self.connected.set()
                    elif line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "text":
                        if self.first_text_at is None:
                            self.first_text_at = time.monotonic()
                        self.text += json.loads(line[6:])["t"]
                    elif line.startswith("data: ") and event == "end":
                        self.ended = True
                        return
        except Exception as exc:  # noqa: BLE001 - counted and shown, not raised
            self.error = repr(exc)
        finally:
            self.connected.set()


class SseBench:
    def __init__(self, args):
        self.args = args
        self.pid = os.getpid()
        self.dbname = f"reviewdesk_bench_sse_{self.pid}"
        self.admin_url = os.environ.get("BENCH_PG_URL") or DEFAULT_PG_URL
        self.redis_url = os.environ.get("BENCH_REDIS_URL") or DEFAULT_REDIS_URL
        self.namespace = f"benchsse{self.pid}."
        self.server: subprocess.Popen | None = None
        self.db_created = False

    def setup(self) -> tuple[list[int], str]:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
            self.db_created = True
        os.environ.update({
            "DATABASE_URL": with_db(self.admin_url, self.dbname), "REDIS_URL": self.redis_url,
            "REVIEWDESK_NAMESPACE": self.namespace, "DJANGO_DEBUG": "true",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost", "DJANGO_SETTINGS_MODULE": "reviewdesk.settings",
            "REVIEWDESK_LOG_LEVEL": "WARNING", "OPENAI_API_KEY": "sk-bench-reviewdesk",
        })
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.test import Client

        from tests.unit.test_draft_stream_rule import streamable_definition
        from workflows import services
        from workflows.definitions import parse_definition

        call_command("migrate", verbosity=0)
        call_command("seed_demo", verbosity=0)
        version, _ = services.workflow_publish(spec=parse_definition({**streamable_definition(), "cache": False}))
        submitter = get_user_model().objects.get(username="submitter")
        data = {"customer_name": "Ann Example", "customer_email": "ann@example.com", "channel": "email",
                "complaint": "My parcel arrived broken.", "order_value": "42.50", "refund_offered": True}
        pks = []
        for _ in range(self.args.watchers):
            submission = services.submission_create(version=version, user=submitter, data=data)
            services.generation_claim(submission_id=submission.pk)  # attempt 1: "generating"
            pks.append(submission.pk)
        client = Client()
        client.force_login(submitter)
        return pks, client.cookies["sessionid"].value

    def start_server(self) -> str:
        from tests.fault_rig import free_port

        port = free_port()
        root = Path(self.args.server_root).resolve() if self.args.server_root else ROOT
        self.log = tempfile.NamedTemporaryFile("w", prefix="bench-sse-uvicorn-", suffix=".log", delete=False)
        self.server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "reviewdesk.asgi:application", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning", "--no-access-log"],
            cwd=root, env=os.environ.copy(), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(url + "/healthz", timeout=2).status == 200:
                    return url
            except OSError:
                pass
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("bench_sse: uvicorn did not start; log: " + self.log.name)
            time.sleep(0.2)

    async def measure(self, pks: list[int], session: str, base: str) -> None:
        import httpx

        from workflows.draft_stream import RedisDraftSink

        a = self.args
        redis_port = int(self.redis_url.split("//", 1)[1].split("/")[0].rsplit(":", 1)[1])
        pid = self.server.pid
        idle = redis_sockets(pid, redis_port)
        watchers = [Watcher(pk) for pk in pks]
        limits = httpx.Limits(max_connections=len(pks) + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(cookies={"sessionid": session}, limits=limits,
                                     timeout=httpx.Timeout(60.0)) as client:
            opened = time.monotonic()
            tasks = [asyncio.create_task(w.run(client, base)) for w in watchers]
            await asyncio.wait_for(asyncio.gather(*(w.connected.wait() for w in watchers)), 120)
            connect_seconds = time.monotonic() - opened
            await asyncio.sleep(1.0)  # every watcher now waits on Redis
            watching = redis_sockets(pid, redis_port)
            cpu_before, wall_before = pids_cpu([pid])[pid], time.monotonic()
            xread_before = xread_stats(self.redis_url)
            peak = [watching]
            sinks = {pk: RedisDraftSink(pk, 1) for pk in pks}
            first_written: dict[int, float] = {}

            writing = {}

            def write_all() -> None:
                writing["started"] = time.monotonic()
                for sink in sinks.values():
                    sink.start()
                for i in range(a.tokens):
                    for pk, sink in sinks.items():
                        first_written.setdefault(pk, time.monotonic())
                        sink.write(f"w{i} ")
                    time.sleep(a.token_interval)
                for sink in sinks.values():
                    sink.finish()
                writing["seconds"] = time.monotonic() - writing["started"]

            writer = asyncio.create_task(asyncio.to_thread(write_all))
            while not writer.done():
                peak.append(redis_sockets(pid, redis_port))
                await asyncio.sleep(0.1)
            await writer
            written = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            drained = time.monotonic() - written
            peak.append(redis_sockets(pid, redis_port))
            cpu, wall = pids_cpu([pid])[pid] - cpu_before, time.monotonic() - wall_before
            xread_after = xread_stats(self.redis_url)
        await asyncio.sleep(1.0)
        after = redis_sockets(pid, redis_port)

        expected = "".join(f"w{i} " for i in range(a.tokens))
        ok = [w for w in watchers if w.status == 200 and w.ended and w.text == expected]
        statuses: dict[int, int] = {}
        for w in watchers:
            statuses[w.status] = statuses.get(w.status, 0) + 1
        latencies = [(w.first_text_at - first_written[w.pk]) * 1000 for w in watchers
                     if w.first_text_at is not None and w.pk in first_written]
        errors = [w.error for w in watchers if w.error][:3]
        say(f"watchers: {len(watchers)} (HTTP statuses {statuses}); whole text read by {len(ok)}"
            + (f"; errors e.g. {errors}" if errors else ""))
        say(f"all connected in {connect_seconds:.2f} s")
        say(f"Redis connections of the server process: idle {idle}, while {len(watchers)} watch "
            f"{watching}, peak during the drafts {max(peak)}, after {after}")
        say(f"last \"end\" written -> every watcher has read it: {drained * 1000:.0f} ms")
        calls, usec = (xread_after[0] - xread_before[0]), (xread_after[1] - xread_before[1])
        say(f"writing the drafts took {writing['seconds']:.2f} s (sleeps: {a.tokens * a.token_interval:.2f} s); "
            f"Redis meanwhile served {calls} XREAD calls in {usec / 1000:.0f} ms of its time "
            "(INFO commandstats: the whole server)")
        say(f"server CPU while the drafts were written and read: {cpu:.2f} s in {wall:.2f} s")
        say(f"first token, XADD -> client (ms): p50 {pct(latencies, 0.5):.0f}, p95 {pct(latencies, 0.95):.0f}, "
            f"max {max(latencies, default=float('nan')):.0f} ({len(latencies)} watchers)")

    def teardown(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.server.kill()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 - Django may not be set up yet
            pass
        import redis

        client = redis.Redis.from_url(self.redis_url)
        for key in client.scan_iter(match=f"*{self.namespace}*", count=1000):
            client.delete(key)
        client.close()
        if self.db_created:
            import psycopg

            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--token-interval", type=float, default=0.05)
    parser.add_argument("--server-root", default="", help="run the server from this checkout")
    args = parser.parse_args()
    bench = SseBench(args)
    try:
        pks, session = bench.setup()
        base = bench.start_server()
        asyncio.run(bench.measure(pks, session, base))
    finally:
        bench.teardown()


if __name__ == "__main__":
    main()
