"""The users of the load bench (tests/bench/load.py), for locust, in its own process.

    locust -f tests/bench/locustfile.py --headless --host http://127.0.0.1:PORT  (with LOAD_CONFIG set)

Not a test and not meant to be run by hand: load.py writes LOAD_CONFIG (a JSON file: users,
password, schedule, where to write the results) and starts locust with it. Everything goes
through the real HTML and htmx endpoints of a gunicorn server, with a logged-in session and
the CSRF token, as a browser would:

* ``Reviewer`` (a fixed number): opens the queue page, picks an unclaimed task among the first
  ten (a random one, as people do, not all the first), opens the review page, claims it (the
  htmx POST), thinks, then approves as drafted (70%), approves with an edit (20%) or rejects
  (10%), and follows the redirect back to the queue. An empty queue is polled as the page's
  htmx trigger does. A claim lost to another reviewer is a 409 the page shows: expected.
* ``Submitter``: walks the guided wizard of the customer-reply workflow (step 1 page, htmx POST,
  step 2 page, htmx POST that creates the submission and answers HX-Redirect to its page), opens
  the submission page and polls its status like the page does. Submissions are paced by one
  schedule for the whole process (steps of rising rate, a gap, a spike), not per user, so the
  offered rate does not depend on how fast the server answers (an open model, up to the number
  of submitter users).

The phases (warm-up while everyone logs in, each step, the gap, the spike) are written to the
results file as they happen, with per-endpoint response times, status classes and the ids of
the submissions created, so the driver can read a step while the run goes on.
"""
from __future__ import annotations

import html
import itertools
import json
import os
import random
import re
import time
from collections import defaultdict
from pathlib import Path

import gevent
from locust import HttpUser, LoadTestShape, constant, events, task

CONFIG = json.loads(Path(os.environ["LOAD_CONFIG"]).read_text()) if os.environ.get("LOAD_CONFIG") else {
    # Defaults only so that `locust --help` and an import work without the driver.
    "reviewers": 1, "submitters": 1, "password": "", "reviewer_prefix": "r", "submitter_prefix": "s",
    "warmup": 1, "steps": [], "gap": 0, "spike_seconds": 0, "results": os.devnull, "control": os.devnull,
    "think": [0.5, 1.0], "step_think": [0.2, 0.5], "poll": 1.0, "status_polls": 1, "slug": "customer-reply",
    "request_timeout": 60,
}

CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
UNCLAIMED_ROW = re.compile(r'<tr data-task="(\d+)" data-free>')  # free: nobody holds it
ANY_ROW = re.compile(r'href="/review/(\d+)/"')
TEXTAREA = re.compile(r'<textarea name="edited_output"[^>]*>(.*?)</textarea>', re.S)
SUBMISSION_URL = re.compile(r"/submissions/(\d+)/")
STILL_POLLING = re.compile(r'id="submission-status"\s+hx-get=')


# --- the schedule -----------------------------------------------------------------------------


class Schedule:
    """The warm-up lasts until every user has logged in (at most ``warmup`` seconds): logins
    are deliberately slow (PBKDF2), and a step must not start while they still queue. Then the
    steps, a gap (rate 0, while the driver judges the steps and writes the spike rate to the
    control file) and the spike."""

    def __init__(self, config: dict):
        self.phases: list[tuple[str, float, float | None]] = []
        for rate, seconds in config["steps"]:
            self.phases.append((f"step {rate:g}/s", seconds, float(rate)))
        if config["spike_seconds"]:
            self.phases.append(("gap", config["gap"], 0.0))
            self.phases.append(("spike", config["spike_seconds"], None))  # rate from the control file
        self.total = sum(seconds for _, seconds, _ in self.phases)
        self.first: float | None = None  # the first tick: users start logging in
        self.t0: float | None = None  # the first step
        self.spike_rate: float | None = None

    def tick(self, logged_in: int, users: int) -> None:
        now = time.time()
        if self.first is None:
            self.first = now
        if self.t0 is None and (logged_in >= users or now - self.first >= CONFIG["warmup"]):
            self.t0 = now + 2.0  # a moment for the last logins' redirects to settle

    def at(self, t: float) -> tuple[int, str, float, float, float]:
        """(index, label, start, end, rate) of the phase at epoch time t; index -1 after the end."""
        if self.t0 is None or t < self.t0:
            return 0, "warmup", self.first or t, self.t0 or float("inf"), 0.0
        start = self.t0
        for index, (label, seconds, rate) in enumerate(self.phases, 1):
            end = start + seconds
            if t < end:
                return index, label, start, end, self.rate_of(rate)
            start = end
        return -1, "after", start, start, 0.0

    def rate_of(self, rate: float | None) -> float:
        if rate is not None:
            return rate
        if self.spike_rate is None:
            try:
                self.spike_rate = float(json.loads(Path(CONFIG["control"]).read_text())["spike_rate"])
            except (OSError, ValueError, KeyError):
                return 0.0  # not written yet: the spike waits for it
        return self.spike_rate


SCHEDULE = Schedule(CONFIG)


class Pacer:
    """Hands out submission start times at the current phase's rate to whichever submitter is
    free. A slot missed because every submitter was busy is not made up later beyond one
    second's worth, so a slow server sees the offered rate, not a burst of catch-up."""

    def __init__(self):
        self.next_t = 0.0
        self.issued: dict[str, int] = defaultdict(int)

    def wait_slot(self) -> str | None:
        """Sleep until this user's slot; the phase label, or None when there is none now."""
        while True:
            now = time.time()
            index, label, start, end, rate = SCHEDULE.at(now)
            if index < 0:
                gevent.sleep(0.5)
                return None
            if rate <= 0:
                gevent.sleep(min(0.5, max(0.01, end - now)))
                return None
            slot = max(self.next_t, start, now - 1.0)
            if slot >= end:
                # This phase's slots are all given out; the next phase sets its own pace.
                gevent.sleep(min(0.5, max(0.01, end - now)))
                self.next_t = max(self.next_t, end)
                return None
            self.next_t = slot + 1.0 / rate
            if slot > now:
                gevent.sleep(slot - now)
            self.issued[label] += 1
            return label


PACER = Pacer()


# --- what is recorded -----------------------------------------------------------------------------


class Record:
    def __init__(self):
        self.times: dict[tuple[str, str], list[float]] = defaultdict(list)  # (phase, name) -> ms
        self.status: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.submissions: list[tuple[int, float, str]] = []  # (id, when, phase of its slot)
        self.wizards_failed: dict[str, int] = defaultdict(int)
        self.decisions: dict[str, int] = defaultdict(int)
        self.phase_marks: list[tuple[str, float, float, float]] = []
        self.logins_failed = 0
        self.errors: list[str] = []  # the first few, to say what went wrong

    def on_request(self, request_type, name, response_time, response_length, response=None,
                   exception=None, context=None, **_kw):
        _, phase, *_ = SCHEDULE.at(time.time())
        key = (phase, name)
        self.times[key].append(response_time)
        code = getattr(response, "status_code", 0) or 0
        if code >= 500:
            cls = "5xx"
        elif code == 0:
            cls = "no answer"  # connection refused, reset, timed out
        else:
            cls = f"{code // 100}xx" if code not in (409, 422) else str(code)
        self.status[key][cls] += 1
        if exception is not None and code and code < 500:
            self.status[key]["unexpected"] += 1
        if exception is not None and len(self.errors) < 20:
            self.errors.append(f"{phase}: {name} -> {code or 'no answer'}: {str(exception)[:200]}")

    def dump(self) -> None:
        marks = []
        if SCHEDULE.t0 is not None:
            marks.append({"label": "warmup", "start": SCHEDULE.first, "end": SCHEDULE.t0, "rate": 0.0, "issued": 0,
                          "logged_in": LOGGED_IN[0]})
            start = SCHEDULE.t0
            for label, seconds, rate in SCHEDULE.phases:
                marks.append({"label": label, "start": start, "end": start + seconds,
                              "rate": SCHEDULE.spike_rate if rate is None else rate,
                              "issued": PACER.issued.get(label, 0)})
                start += seconds
        out = {
            "written_at": time.time(),
            "phases": marks,
            "requests": [{"phase": p, "name": n, "ms": v, "status": dict(self.status[(p, n)])}
                         for (p, n), v in self.times.items()],
            "submissions": self.submissions,
            "wizards_failed": dict(self.wizards_failed),
            "decisions": dict(self.decisions),
            "logins_failed": self.logins_failed,
            "errors": self.errors,
        }
        tmp = Path(CONFIG["results"] + ".tmp")
        tmp.write_text(json.dumps(out))
        tmp.replace(CONFIG["results"])


RECORD = Record()
LOGGED_IN = [0]  # users logged in so far (one process, one gevent loop: no lock needed)
events.request.add_listener(RECORD.on_request)


@events.quitting.add_listener
def _dump_at_exit(environment, **_kw):
    RECORD.dump()


def _dumper():
    while True:
        gevent.sleep(2)
        RECORD.dump()


@events.test_start.add_listener
def _start_dumper(environment, **_kw):
    gevent.spawn(_dumper)


# --- users ----------------------------------------------------------------------------------------


class Shape(LoadTestShape):
    """Every user starts at the beginning (their logins are the warm-up); the schedule ends the run."""

    def tick(self):
        total = CONFIG["reviewers"] + CONFIG["submitters"]
        SCHEDULE.tick(LOGGED_IN[0], total)
        if SCHEDULE.t0 is not None and time.time() - SCHEDULE.t0 >= SCHEDULE.total:
            RECORD.dump()
            return None
        # Spawned at 10 a second: the logins queue at the web server anyway.
        return total, 10


class BrowserUser(HttpUser):
    abstract = True
    wait_time = constant(0)
    prefix = ""
    _numbers: itertools.count

    def on_start(self):
        self.client.headers["User-Agent"] = "reviewdesk-load"
        self.username = f"{self.prefix}{next(self._numbers)}"
        self.timeout = CONFIG["request_timeout"]
        while True:
            page = self.client.get("/accounts/login/", name="GET /accounts/login/", timeout=self.timeout)
            token = self.token(page.text)
            with self.client.post("/accounts/login/", name="POST /accounts/login/", timeout=self.timeout,
                                  data={"username": self.username, "password": CONFIG["password"],
                                        "csrfmiddlewaretoken": token, "next": "/"},
                                  allow_redirects=False, catch_response=True) as answer:
                if answer.status_code == 302 and "/accounts/login" not in answer.headers.get("Location", ""):
                    answer.success()
                    LOGGED_IN[0] += 1
                    return
                answer.failure(f"login of {self.username} answered {answer.status_code}")
            RECORD.logins_failed += 1
            gevent.sleep(1)

    def token(self, text: str) -> str:
        m = CSRF_INPUT.search(text or "")
        return m.group(1) if m else self.client.cookies.get("csrftoken", "")

    def htmx(self, token: str, url: str) -> dict:
        return {"HX-Request": "true", "HX-Current-URL": self.host + url, "X-CSRFToken": token}

    def think(self, bounds) -> None:
        gevent.sleep(random.uniform(*bounds))


class Reviewer(BrowserUser):
    fixed_count = CONFIG["reviewers"]
    prefix = CONFIG["reviewer_prefix"]
    _numbers = itertools.count(1)

    @task
    def work_the_queue(self):
        queue = None
        for lane in ("blocking_review", "async_review"):
            page = self.client.get(f"/review/?lane={lane}", name="GET /review/ (queue page)", timeout=self.timeout)
            found = UNCLAIMED_ROW.findall(page.text or "") or (
                [] if "The queue is empty." in (page.text or "") else ANY_ROW.findall(page.text or ""))
            if found:
                queue = found[:10]
                break
        if not queue:
            # Nothing to review: the page's htmx trigger polls the queue (every 15 s) until
            # something comes; people glance at it and reload sooner now and then.
            self.think([CONFIG["poll"] / 3, CONFIG["poll"]])
            self.client.get("/review/counts/?lane=blocking_review", name="GET /review/counts/ (htmx poll)",
                            headers={"HX-Request": "true"}, timeout=self.timeout)
            return
        pk = random.choice(queue)
        page = self.client.get(f"/review/{pk}/", name="GET /review/<pk>/", timeout=self.timeout)
        token = self.token(page.text)
        with self.client.post(f"/review/{pk}/claim/", name="POST /review/<pk>/claim/ (htmx)",
                              headers=self.htmx(token, f"/review/{pk}/"), timeout=self.timeout,
                              catch_response=True) as claim:
            if claim.status_code == 409:
                claim.success()  # another reviewer was first: the page says so, nothing broke
                RECORD.decisions["claim lost to another reviewer"] += 1
                return
            if claim.status_code != 200:
                claim.failure(f"claim answered {claim.status_code}")
                return
            form = TEXTAREA.search(claim.text or "")
        if form is None:
            # Not the page this script knows: give the task back rather than sit on its lease.
            RECORD.decisions["claimed, no approve form (released)"] += 1
            self.client.post(f"/review/{pk}/release/", data={"csrfmiddlewaretoken": token}, allow_redirects=False,
                             name="POST /review/<pk>/release/", timeout=self.timeout)
            return
        drafted = html.unescape(form.group(1))
        if drafted.startswith("\r\n"):
            drafted = drafted[2:]
        elif drafted.startswith("\n"):
            drafted = drafted[1:]
        self.think(CONFIG["think"])
        roll = random.random()
        if roll < 0.7:
            kind, url, data = "approved", f"/review/{pk}/approve/", {"edited_output": drafted}
        elif roll < 0.9:
            kind, url = "approved with an edit", f"/review/{pk}/approve/"
            try:
                value = json.loads(drafted)
                value["reply"] = value.get("reply", "") + " Kind regards, the support team."
                edited = json.dumps(value, indent=2)
            except (ValueError, AttributeError):
                edited = drafted + " Kind regards."
            data = {"edited_output": edited}
        else:
            kind, url = "rejected", f"/review/{pk}/reject/"
            data = {"reason_code": "tone", "reason_text": "Too formal for this customer."}
        data["csrfmiddlewaretoken"] = token
        name = "POST /review/<pk>/approve/" if "approve" in url else "POST /review/<pk>/reject/"
        with self.client.post(url, data=data, name=name, allow_redirects=False, timeout=self.timeout,
                              catch_response=True) as answer:
            if answer.status_code == 302:
                RECORD.decisions[kind] += 1
            elif answer.status_code == 409:
                answer.success()  # the lease ran out under load and someone else took it
                RECORD.decisions["decision refused (409)"] += 1
            else:
                answer.failure(f"{kind} answered {answer.status_code}")


class Submitter(BrowserUser):
    weight = 1
    prefix = CONFIG["submitter_prefix"]
    _numbers = itertools.count(1)
    _serial = itertools.count(1)

    @task
    def submit(self):
        phase = PACER.wait_slot()
        if phase is None:
            return
        if not self.wizard(phase):
            RECORD.wizards_failed[phase] += 1

    def wizard(self, phase: str) -> bool:
        slug = CONFIG["slug"]
        serial = next(self._serial)
        first = f"/workflows/{slug}/new/"
        page = self.client.get(first, name="GET /workflows/<slug>/new/ (step 1)", timeout=self.timeout)
        if page.status_code != 200:
            return False
        token = self.token(page.text)
        self.think(CONFIG["step_think"])
        step1 = {"customer_name": f"Load Customer {serial}", "customer_email": f"c{serial}@example.com",
                 "channel": random.choice(["email", "chat"]), "nav": "next", "csrfmiddlewaretoken": token}
        answer = self.client.post(f"/workflows/{slug}/new/1/", data=step1, headers=self.htmx(token, first),
                                  name="POST /workflows/<slug>/new/1/ (htmx)", timeout=self.timeout)
        second = answer.headers.get("HX-Redirect", "")
        if answer.status_code != 200 or not second:
            return False
        page = self.client.get(second, name="GET /workflows/<slug>/new/2/", timeout=self.timeout)
        if page.status_code != 200:
            return False
        token = self.token(page.text)
        self.think(CONFIG["step_think"])
        # A different complaint every time: the drafting cache must not answer for the model.
        step2 = {"complaint": f"Order {serial}-{self.username}-{random.randrange(10**9)} arrived broken; "
                              "the box was crushed and the item inside is cracked.",
                 "order_value": f"{random.randint(5, 500)}.{random.randint(0, 99):02d}",
                 "refund_offered": "on", "nav": "next", "csrfmiddlewaretoken": token}
        answer = self.client.post(f"/workflows/{slug}/new/2/", data=step2, headers=self.htmx(token, second),
                                  name="POST /workflows/<slug>/new/2/ (htmx, creates)", timeout=self.timeout)
        done = SUBMISSION_URL.search(answer.headers.get("HX-Redirect", ""))
        if answer.status_code != 200 or not done:
            return False
        pk = int(done.group(1))
        RECORD.submissions.append((pk, time.time(), phase))
        url = f"/submissions/{pk}/"
        page = self.client.get(url, name="GET /submissions/<pk>/", timeout=self.timeout)
        for _ in range(CONFIG["status_polls"]):
            # The page polls every 2 s while the draft is being prepared (hx-trigger).
            if not STILL_POLLING.search(page.text or ""):
                break
            gevent.sleep(2)
            page = self.client.get(url, name="GET /submissions/<pk>/ (htmx poll)",
                                   headers={"HX-Request": "true"}, timeout=self.timeout)
        return True
