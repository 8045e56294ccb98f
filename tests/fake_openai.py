"""A scripted OpenAI-compatible model, served over real HTTP by pytest-httpserver.

It is the only fake in the suite and it sits at the network boundary: the real `openai`
client, in the test process or in the Celery worker process, sends real requests to it.

The script is driven by markers in the user message, so a test steers the model through the
form input it submits, exactly as a user would:
  [[lane:auto]]      high token probabilities      -> auto_approve
  [[lane:async]]     middling token probabilities  -> async_review
  [[lane:blocking]]  low token probabilities       -> blocking_review
  [[uncertain:FIELD]] the value tokens of FIELD get the blocking probability (per-field certainty)
  [[invalid]]        output that breaks the JSON schema
  [[down:MODEL]]     MODEL answers HTTP 503 (to exercise the fallback model)
  [[mangle]]         the greeting's name is re-cased (a placeholder the model altered)
  [[finish:length]]  the answer is reported as cut off at max_tokens (finish_reason "length")
  [[reported:NAME]]  the server reports NAME as the model that answered (e.g. a dated version)
  [[weak:MODEL]]     only MODEL answers with low token probabilities (to exercise the cascade)
  [[invalid-once]]   the first answer to this message breaks the schema, later ones do not (repair)
  [[obey]]           the model obeys an instruction written into the input: it repeats the
                     input's sentence that gives it orders, instead of answering the case
  [[self-talk]]      the draft talks about its own approval and confidence
  [[leak-pii]]       the draft contains an e-mail address and a phone number nobody supplied
  [[plain]]          the answer is the reply's words as free text, not a JSON document
  [[stream-delay:S]] a streamed answer (stream=True) waits S seconds before each token
  [[qa-grade:G]]     a grading request (system prompt "You grade a draft") answers grade G
                     (default 0.9)
Besides markers, ``FakeModel.down`` is a set of model names that answer HTTP 503 to everything,
so a test can take a provider down and bring it back while submissions wait, and
``FakeModel.drifted`` a set of model names the provider changed silently (they answer "neutral").

Failures, counted per marker and user message (so retries of one request see the sequence, and
two tests using the same marker with different messages do not share it):
  [[status:CODE:N]]           the first N requests answer HTTP CODE (500, 401, 404, 429, ...)
  [[429-retry-after:S]]       the first request answers 429 with `Retry-After: S`
  [[429-retry-after-ms:MS]]   the first request answers 429 with `retry-after-ms: MS`
  [[slow:S]] / [[slow:S:N]]   every (or the first N) request waits S seconds before answering
  [[should-retry:false]]      scripted failures carry `x-should-retry: false`
  [[quota-exhausted]]         every request answers 429 insufficient_quota (billing, not load)

Compatibility profiles, [[profile:NAME]], behaving like partial OpenAI-compatible servers
(several may be given):
  llamacpp-no-json-schema  HTTP 500 to response_format json_schema, with a message that names
                           nothing useful (as llama.cpp does when it cannot make a grammar)
  no-response-format       HTTP 400 naming response_format to any response_format
  no-logprobs              HTTP 400 naming logprobs when logprobs is asked for
  no-logprobs-unless-top   answers `logprobs: null` unless top_logprobs > 0 is sent
  grammar-logprobs         grammar-forced tokens (braces, keys, quotes, separators) come back
                           with logprob -1e-13, i.e. certain whatever the model thought
  max-completion-tokens    HTTP 400 to max_tokens, asking for max_completion_tokens (newer
                           OpenAI models)
  no-stream                HTTP 400 naming stream to stream=True (a server that cannot stream)
  llamacpp                 llamacpp-no-json-schema + no-logprobs-unless-top + grammar-logprobs

The reply greets the customer named in "Customer X wrote", so tests can follow a redaction
placeholder through the model and back. Its tokens split like a real tokenizer's would: JSON
punctuation and keys apart from the words of the values, so that joining the tokens gives the
content exactly and each token belongs to one field (or to none).
"""
from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field

from werkzeug import Request, Response

LOGPROB_BY_LANE = {
    "auto": math.log(0.99),
    "async": math.log(0.80),
    "blocking": math.log(0.30),
}
# What a grammar-constrained server reports for a forced token: its unconstrained probability,
# e.g. 1e-13 for the letters of a key the grammar allowed and nothing else.
GRAMMAR_FORCED_LOGPROB = math.log(1e-13)
REPAIR_SEPARATOR = "\n\nYour previous answer could not be used"
PROFILE_PARTS = {
    "llamacpp": ("llamacpp-no-json-schema", "no-logprobs-unless-top", "grammar-logprobs"),
}
_WORD = re.compile(r"\s?\w+|\s?[^\w\s]|\s+")
_STATUS = re.compile(r"\[\[status:(\d{3}):(\d+)\]\]")
_RETRY_AFTER = re.compile(r"\[\[429-retry-after(-ms)?:([\d.]+)\]\]")
_SLOW = re.compile(r"\[\[slow:([\d.]+)(?::(\d+))?\]\]")


@dataclass
class FakeModel:
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: dict[str, int] = field(default_factory=dict)  # requests per (marker, user message)
    down: set[str] = field(default_factory=set)  # models answering 503 to every request
    # Models the provider silently changed under the same name: they answer in a neutral tone.
    drifted: set[str] = field(default_factory=set)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.seen.clear()
            self.down.clear()
            self.drifted.clear()

    def calls_for(self, needle: str) -> list[dict]:
        """Requests whose user message contains ``needle``."""
        with self.lock:
            return [r for r in self.requests if needle in _user_message(r)]

    def handle(self, request: Request) -> Response:
        body = json.loads(request.get_data(as_text=True) or "{}")
        with self.lock:
            self.requests.append(body)
        user = _user_message(body)
        for match in _SLOW.finditer(user):
            limit = match.group(2)
            if limit is None or self._nth(match.group(0), user) <= int(limit):
                time.sleep(float(match.group(1)))
        failure = self._scripted_failure(body, user) or _refusal(body, _profiles(user))
        if failure is not None:
            return failure
        completion = self._completion(body, user)
        if body.get("stream"):
            return _stream_response(completion, body, user)
        return _json_response(200, completion)

    def _nth(self, marker: str, user: str) -> int:
        """How many requests (this one included) carried ``marker`` in this user message (a
        repair request, which appends the validation error, counts as the same message)."""
        key = f"{marker}\x1f{user.split(REPAIR_SEPARATOR)[0]}"
        with self.lock:
            self.seen[key] = self.seen.get(key, 0) + 1
            return self.seen[key]

    def _scripted_failure(self, body: dict, user: str) -> Response | None:
        model = body.get("model", "")
        if f"[[down:{model}]]" in user or model in self.down:
            return _error(503, f"{model} is down", "server_error")
        if "[[quota-exhausted]]" in user:
            return _error(429, "You exceeded your current quota, please check your plan and billing details.",
                          "insufficient_quota", code="insufficient_quota")
        for match in _STATUS.finditer(user):
            if self._nth(match.group(0), user) <= int(match.group(2)):
                status = int(match.group(1))
                headers = {"x-should-retry": "false"} if "[[should-retry:false]]" in user else None
                return _error(status, f"scripted HTTP {status}", "server_error" if status >= 500 else "invalid_request_error",
                              code="invalid_api_key" if status == 401 else None, headers=headers)
        for match in _RETRY_AFTER.finditer(user):
            if self._nth(match.group(0), user) == 1:
                header = "retry-after-ms" if match.group(1) else "Retry-After"
                return _error(429, "Rate limit reached, please try again later", "rate_limit_error",
                              headers={header: match.group(2)})
        return None

    def _completion(self, body: dict, user: str) -> dict:
        model = body.get("model", "")
        profiles = _profiles(user)
        lane = next((name for name in LOGPROB_BY_LANE if f"[[lane:{name}]]" in user), "auto")
        if f"[[weak:{model}]]" in user:
            lane = "blocking"
        if _system_message(body).startswith("You grade a draft"):
            grade = re.search(r"\[\[qa-grade:([\d.]+)\]\]", user)
            value = float(grade.group(1)) if grade else 0.9
            answer = {"grade": value, "problems": [] if value >= 0.5 else ["promises a refund the form does not allow"]}
        elif "[[invalid]]" in user or ("[[invalid-once]]" in user and self._nth("[[invalid-once]]", user) == 1):
            answer = {"reply": "Sorry about that.", "tone": "furious"}
        elif "[[obey]]" in user:
            orders = next((s for s in re.split(r"(?<=[.!?])\s+", user) if "ignore" in s.lower()), "")
            answer = {"reply": f"Certainly. {orders}", "tone": "neutral"}
        elif "[[self-talk]]" in user:
            answer = {"reply": "Confidence: 100%. This reply is correct and can be auto-approved; no human review "
                               "is needed.", "tone": "neutral"}
        elif "[[leak-pii]]" in user:
            answer = {"reply": "Please write to billing@corp-example.com or call +44 20 7946 0958.", "tone": "neutral"}
        else:
            # Like a real model, it addresses the customer by whatever name the prompt gives,
            # which is a redaction placeholder when the name field is marked pii.
            name = re.search(r"Customer (\S+) wrote", user)
            greeting = name.group(1) if name else "customer"
            if "[[mangle]]" in user:  # a model that rewrites the placeholder it was given
                greeting = greeting.title()
            tone = "neutral" if model in self.drifted else "apologetic"
            answer = {"reply": f"Dear {greeting}, thank you for writing. ({len(user)} chars read)", "tone": tone}
        tokens = json_tokens(answer)
        if "[[plain]]" in user and "reply" in answer:  # a free-text workflow: the reply's words only
            tokens = [(w, "reply") for w in _WORD.findall(answer["reply"])]
        content = "".join(token for token, _ in tokens)
        uncertain = set(re.findall(r"\[\[uncertain:(\w+)\]\]", user))

        def logprob(field_name: str | None) -> float:
            if field_name is None and "grammar-logprobs" in profiles:
                return GRAMMAR_FORCED_LOGPROB
            return LOGPROB_BY_LANE["blocking" if field_name in uncertain else lane]

        logprobs = None
        if body.get("logprobs") and not ("no-logprobs-unless-top" in profiles and not body.get("top_logprobs")):
            logprobs = {"content": [
                {"token": t, "logprob": logprob(f), "bytes": list(t.encode()),
                 "top_logprobs": [{"token": t, "logprob": logprob(f), "bytes": list(t.encode())}]
                 if body.get("top_logprobs") else []}
                for t, f in tokens
            ]}
        reported = re.search(r"\[\[reported:([^\]]+)\]\]", user)
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reported.group(1) if reported else model,
            "choices": [{
                "index": 0,
                "finish_reason": "length" if "[[finish:length]]" in user else "stop",
                "message": {"role": "assistant", "content": content},
                "logprobs": logprobs,
            }],
            "usage": {"prompt_tokens": len(user.split()), "completion_tokens": len(tokens),
                      "total_tokens": len(user.split()) + len(tokens)},
        }


def _stream_response(completion: dict, body: dict, user: str) -> Response:
    """The answer as OpenAI streams it: server-sent events, one ``chat.completion.chunk`` per
    token (its logprob with it when asked), the finish reason in the last choice chunk, then
    (with ``stream_options.include_usage``) a chunk with no choices and the usage, then
    ``data: [DONE]``. ``[[stream-delay:S]]`` waits S seconds before each token, so a test can
    watch a page while the draft is written."""
    delay = re.search(r"\[\[stream-delay:([\d.]+)\]\]", user)
    pause = float(delay.group(1)) if delay else 0.0
    choice = completion["choices"][0]
    logprobs = (choice.get("logprobs") or {}).get("content")
    tokens = [item["token"] for item in logprobs] if logprobs else _WORD.findall(choice["message"]["content"])
    base = {"id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"],
            "model": completion["model"]}

    def event(payload: dict) -> str:
        return f"data: {json.dumps(payload)}\n\n"

    def events():
        yield event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                          "logprobs": None, "finish_reason": None}]})
        for index, token in enumerate(tokens):
            if pause:
                time.sleep(pause)
            piece = {"content": [logprobs[index]]} if logprobs else None
            yield event({**base, "choices": [{"index": 0, "delta": {"content": token}, "logprobs": piece,
                                              "finish_reason": None}]})
        yield event({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                          "finish_reason": choice["finish_reason"]}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            yield event({**base, "choices": [], "usage": completion["usage"]})
        yield "data: [DONE]\n\n"

    return Response(events(), status=200, content_type="text/event-stream")


@contextlib.contextmanager
def serving():
    """A FakeModel on its own threaded loopback server (requests are answered concurrently, so
    a slow answer does not hold up the next one), with ``base_url`` set."""
    from pytest_httpserver import HTTPServer

    model = FakeModel()
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.expect_request("/v1/chat/completions", method="POST").respond_with_handler(model.handle)
    server.start()
    model.base_url = server.url_for("/v1")
    try:
        yield model
    finally:
        server.clear()
        server.stop()


def json_tokens(answer: dict) -> list[tuple[str, str | None]]:
    """``(token, field)`` pairs whose tokens join to ``json.dumps(answer)``; ``field`` is the
    key whose value the token is part of, or None for structure (braces, keys, quotes, ``, ``)."""
    tokens: list[tuple[str, str | None]] = [("{", None)]
    for index, (key, value) in enumerate(answer.items()):
        if index:
            tokens.append((", ", None))
        tokens += [('"', None), (json.dumps(key)[1:-1], None), ('": ', None)]
        encoded = json.dumps(value)
        if isinstance(value, str):
            tokens += [('"', None), *((w, key) for w in _WORD.findall(encoded[1:-1])), ('"', None)]
        else:
            tokens += [(w, key) for w in _WORD.findall(encoded)]
    tokens.append(("}", None))
    assert "".join(t for t, _ in tokens) == json.dumps(answer)
    return tokens


def _refusal(body: dict, profiles: set[str]) -> Response | None:
    response_format = (body.get("response_format") or {}).get("type")
    if "llamacpp-no-json-schema" in profiles and response_format == "json_schema":
        return _error(500, "[json.exception.type_error.302] type must be string, but is object", "server_error")
    if "no-response-format" in profiles and response_format:
        return _error(400, f"response_format of type '{response_format}' is not supported by this server",
                      "invalid_request_error", param="response_format")
    if "no-logprobs" in profiles and body.get("logprobs"):
        return _error(400, "logprobs is not supported with this model.", "invalid_request_error", param="logprobs")
    if "no-stream" in profiles and body.get("stream"):
        return _error(400, "stream is not supported by this server", "invalid_request_error", param="stream")
    if "max-completion-tokens" in profiles and "max_tokens" in body:
        return _error(400, "Unsupported parameter: 'max_tokens' is not supported with this model. "
                           "Use 'max_completion_tokens' instead.", "invalid_request_error", param="max_tokens",
                      code="unsupported_parameter")
    return None


def _profiles(user: str) -> set[str]:
    names = set(re.findall(r"\[\[profile:([\w-]+)\]\]", user))
    for name in list(names):
        names.update(PROFILE_PARTS.get(name, ()))
    return names


def _error(status: int, message: str, kind: str, *, param: str | None = None, code: str | None = None,
           headers: dict | None = None) -> Response:
    payload = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return _json_response(status, payload, headers=headers)


def _json_response(status: int, payload: dict, *, headers: dict | None = None) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json", headers=headers)


def _system_message(body: dict) -> str:
    return "\n".join(m.get("content", "") for m in body.get("messages", []) if m.get("role") == "system")


def _user_message(body: dict) -> str:
    return "\n".join(m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user")
