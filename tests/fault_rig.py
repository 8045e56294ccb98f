"""Real processes for the fault tests (tests/integration/test_faults.py): Celery workers and beat,
gunicorn, a private redis-server, and an HTTP client that logs in and submits like a user.

Every process a test starts here is its own (its own session / process group), so a test kills
only what it started. A rig has its own namespace (queues and cache keys, REVIEWDESK_NAMESPACE)
inside this run's, so the session's worker never takes its tasks.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import MODEL_API_KEY, NAMESPACE, ROOT

DEMO_PASSWORD = "reviewdesk-demo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 30) -> int | None:
    """Signal this process's group (started with start_new_session) and wait for it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
    return proc.returncode


def start_uvicorn(log_path: Path, **extra_env) -> tuple[str, subprocess.Popen]:
    """The app under uvicorn (reviewdesk.asgi, as gunicorn's uvicorn workers serve it) on this
    run's test database and Redis namespace, once /healthz answers; stop it with stop()."""
    from django.db import connection

    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + connection.settings_dict["NAME"],
        "REVIEWDESK_NAMESPACE": NAMESPACE,
        "DJANGO_DEBUG": "true",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        **extra_env,
    }
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "reviewdesk.asgi:application", "--host",
                                 "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError("uvicorn did not start:\n" + log_path.read_text()[-3000:])
        time.sleep(0.2)


class Rig:
    """Processes sharing one namespace, one database (this run's test database) and one broker."""

    def __init__(self, name: str, tmp: Path, *, model_url: str, redis_url: str | None = None, **env):
        from django.db import connection

        self.namespace = f"{NAMESPACE}{name}."
        self.tmp = tmp
        self.redis_url = redis_url or os.environ["REDIS_URL"]
        self.env = {
            **os.environ,
            "DATABASE_URL": os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + connection.settings_dict["NAME"],
            "REDIS_URL": self.redis_url,
            "REVIEWDESK_NAMESPACE": self.namespace,
            "OPENAI_API_KEY": MODEL_API_KEY,
            "OPENAI_BASE_URL": model_url,
            "REVIEWDESK_LLM_MAX_RETRIES": "0",
            "DJANGO_DEBUG": "true",
            "PYTHONUNBUFFERED": "1",
            "PYTHONFAULTHANDLER": "1",
            # The pooled connections say whose they are, so a test that terminates backends
            # can pick this rig's (application_name, filtered with the database's name).
            "PGAPPNAME": f"reviewdesk-rig-{name}",
            **{k: str(v) for k, v in env.items()},
        }
        self.procs: list[subprocess.Popen] = []

    @property
    def queues(self) -> str:
        return f"{self.namespace}llm,{self.namespace}celery"

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        log_path = self.tmp / log_name
        log = open(log_path, "a")
        proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        proc.log_path = log_path
        self.procs.append(proc)
        return proc

    def worker(self, name: str, *, concurrency: int = 4, wait: bool = True) -> subprocess.Popen:
        """`celery worker` as docker-compose runs it: a threads pool on both queues."""
        node = f"{name}-{self.namespace.rstrip('.')}@{socket.gethostname()}"
        proc = self._spawn([sys.executable, "-m", "celery", "-A", "reviewdesk", "worker", "-P", "threads",
                            "-c", str(concurrency), "-Q", self.queues, "-n", node, "-l", "info",
                            "--without-heartbeat", "--without-mingle", "--without-gossip"], f"{name}.log")
        proc.node = node
        if wait:
            self.wait_ready(proc)
        return proc

    def wait_ready(self, proc, timeout: float = 90) -> None:
        """The worker has connected and consumes (its log says `ready.`)."""
        deadline = time.monotonic() + timeout
        while "ready." not in Path(proc.log_path).read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{Path(proc.log_path).read_text()[-3000:]}")
            time.sleep(0.2)

    def beat(self) -> subprocess.Popen:
        return self._spawn([sys.executable, "-m", "celery", "-A", "reviewdesk", "beat", "-l", "info",
                            "--schedule", str(self.tmp / "beat-schedule")], "beat.log")

    def gunicorn(self, *, workers: int = 2, threads: int = 4) -> tuple[subprocess.Popen, str]:
        port = free_port()
        proc = self._spawn([sys.executable, "-m", "gunicorn", "reviewdesk.wsgi:application", "--bind",
                            f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads),
                            "--graceful-timeout", "5", "--access-logfile", "-"], "gunicorn.log")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{Path(proc.log_path).read_text()[-3000:]}")
            time.sleep(0.3)

    @contextmanager
    def sending(self):
        """Make this test process send its tasks to the rig's queues (and broker)."""
        from django.conf import settings

        from reviewdesk.celery import app

        saved = (app.conf.task_default_queue, app.conf.task_routes)
        app.conf.update(task_default_queue=f"{self.namespace}celery",
                        task_routes={"workflows.tasks.generate_draft": {"queue": f"{self.namespace}llm"},
                                     "evals.tasks.run_eval_case": {"queue": f"{self.namespace}llm"}})
        saved_llm = settings.REVIEWDESK_LLM_QUEUE
        settings.REVIEWDESK_LLM_QUEUE = f"{self.namespace}llm"
        try:
            yield
        finally:
            app.conf.update(task_default_queue=saved[0], task_routes=saved[1])
            settings.REVIEWDESK_LLM_QUEUE = saved_llm

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc, signal.SIGTERM, timeout=20)


class RedisServer:
    """A private redis-server on a free port: a test may stop and start it (never the shared one)."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, signal.SIGKILL, timeout=10)
            self.proc = None


_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def servable_password(username: str) -> None:
    """Give a demo user a password hash the server processes accept: the suite hashes with MD5
    for speed (tests/conftest.py), which a server with the default hashers refuses."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    encoded = PBKDF2PasswordHasher().encode(DEMO_PASSWORD, PBKDF2PasswordHasher().salt())
    get_user_model().objects.filter(username=username).update(password=encoded)


class Browserless:
    """A user's HTTP session against a running server: logs in, submits the customer-reply wizard."""

    def __init__(self, base_url: str, username: str, *, timeout: float = 30):
        self.client = httpx.Client(base_url=base_url, timeout=timeout, follow_redirects=False)
        page = self.client.get("/accounts/login/")
        response = self.client.post("/accounts/login/", data={
            "csrfmiddlewaretoken": _CSRF.search(page.text).group(1), "username": username,
            "password": DEMO_PASSWORD})
        assert response.status_code == 302, f"login failed: {response.status_code}"

    def csrf(self) -> str:
        return self.client.cookies.get("csrftoken", "")

    def post(self, url: str, data: dict) -> httpx.Response:
        return self.client.post(url, data={**data, "csrfmiddlewaretoken": self.csrf()},
                                headers={"X-CSRFToken": self.csrf(), "Referer": str(self.client.base_url)})

    def submit_customer_reply(self, complaint: str) -> httpx.Response:
        """The two steps of the demo wizard; the last answer is the one that creates the submission."""
        self.client.get("/workflows/customer-reply/new/")
        first = self.post("/workflows/customer-reply/new/1/", {
            "customer_name": "Ann Example", "customer_email": "ann@example.com", "channel": "email"})
        if first.status_code != 302:
            return first
        return self.post("/workflows/customer-reply/new/2/", {
            "complaint": complaint, "order_value": "42.50", "refund_offered": "on"})

    def close(self) -> None:
        self.client.close()


def submission_id(response: httpx.Response) -> int | None:
    match = re.search(r"/submissions/(\d+)/", response.headers.get("location", ""))
    return int(match.group(1)) if match else None

