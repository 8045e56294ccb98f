"""An OpenAI-compatible chat.completions server for the benchmark, in its own process.

    python tests/bench/fake_model_server.py [--port 0] [--delay 0]

Prints ``PORT <n>`` on its first line once it listens on 127.0.0.1. Every answer is a valid
chat.completion for the customer-reply demo workflow (``{"reply": str, "tone": "apologetic"}``)
with token logprobs of ln(0.99) (so drafts are certain and auto-approve), usage tokens and the
model name that was asked for. Each answer waits the current delay first; a handler thread per
connection lets hundreds of requests wait at once.

Control (plain GET, loopback only):
  /bench/delay?seconds=2   set the delay of every later answer
  /bench/stats             {"requests": n, "in_flight": n, "max_in_flight": n, "delay": s}
  /bench/certainty?review_share=0.5&p=0.75
                           that share of the answers (every k-th request, evenly spread) carry
                           token probabilities p instead of 0.99, so their drafts land in a
                           review lane (the load bench, tests/bench/load.py); default share 0

Standard library only (no Django, no werkzeug): it starts in well under a second and its CPU
cost per answer is small and constant, so what is measured is the app, not the fake.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOGPROB = math.log(0.99)
_TOKEN = re.compile(r"\s?\w+|\s?[^\w\s]|\s+")


class State:
    def __init__(self, delay: float):
        self.delay = delay
        self.review_share = 0.0
        self.review_p = 0.75
        self.lock = threading.Lock()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def enter(self) -> int:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.requests

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


def completion(body: dict, n: int, logprob: float = LOGPROB) -> dict:
    model = body.get("model") or "gpt-4o-mini"
    answer = {"reply": "Dear customer, we are sorry your order went wrong. A replacement is on its way.",
              "tone": "apologetic"}
    content = json.dumps(answer)
    tokens = _TOKEN.findall(content)
    assert "".join(tokens) == content
    logprobs = None
    if body.get("logprobs"):
        top = bool(body.get("top_logprobs"))
        logprobs = {"content": [
            {"token": t, "logprob": logprob, "bytes": list(t.encode()),
             "top_logprobs": [{"token": t, "logprob": logprob, "bytes": list(t.encode())}] if top else []}
            for t in tokens
        ]}
    user = "\n".join(m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user")
    prompt_tokens = max(1, len(user.split()))
    return {
        "id": f"chatcmpl-bench-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content, "refusal": None},
                     "logprobs": logprobs}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens),
                  "total_tokens": prompt_tokens + len(tokens)},
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the openai client reuses its connections
    # Headers and body leave in one segment, at once: otherwise Nagle's algorithm holds the body
    # until the client's delayed ACK (40 ms on Linux), and every answer would take 40 ms.
    disable_nagle_algorithm = True
    wbufsize = -1  # buffered: send_response/headers/body are flushed together by _send
    server: "Server"

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def do_GET(self):
        url = urlsplit(self.path)
        state = self.server.state
        if url.path == "/bench/delay":
            state.delay = float(parse_qs(url.query).get("seconds", ["0"])[0])
        if url.path == "/bench/certainty":
            query = parse_qs(url.query)
            state.review_share = min(1.0, max(0.0, float(query.get("review_share", ["0"])[0])))
            state.review_p = min(0.999, max(0.001, float(query.get("p", ["0.75"])[0])))
        if url.path in ("/bench/delay", "/bench/stats", "/bench/certainty"):
            with state.lock:
                self._send(200, {"requests": state.requests, "in_flight": state.in_flight,
                                 "max_in_flight": state.max_in_flight, "delay": state.delay})
            return
        self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        if urlsplit(self.path).path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        state = self.server.state
        n = state.enter()
        try:
            body = json.loads(raw or b"{}")
            if state.delay > 0:
                time.sleep(state.delay)
            # The n-th answer is a less certain one when n * share crosses a whole number.
            share = state.review_share
            unsure = share > 0 and int(n * share) > int((n - 1) * share)
            self._send(200, completion(body, n, math.log(state.review_p) if unsure else LOGPROB))
        finally:
            state.leave()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 2048  # listen backlog: hundreds of clients may connect at once
    allow_reuse_address = True

    def __init__(self, address, delay: float):
        super().__init__(address, Handler)
        self.state = State(delay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    server = Server(("127.0.0.1", args.port), args.delay)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
