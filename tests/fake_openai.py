"""A scripted OpenAI-compatible model, served over real HTTP by pytest-httpserver.

It is the only fake in the suite and it sits at the network boundary: the real `openai`
client, in the test process or in the Celery worker process, sends real requests to it.

The script is driven by markers in the user message, so a test steers the model through the
form input it submits, exactly as a user would:
  [[lane:auto]]      high token probabilities      -> auto_approve
  [[lane:async]]     middling token probabilities  -> async_review
  [[lane:blocking]]  low token probabilities       -> blocking_review
  [[invalid]]        output that breaks the JSON schema
  [[down:MODEL]]     MODEL answers HTTP 503 (to exercise the fallback model)
  [[mangle]]         the greeting's name is re-cased (a placeholder the model altered)
The reply greets the customer named in "Customer X wrote", so tests can follow a redaction
placeholder through the model and back.
"""
from __future__ import annotations

import json
import re
import math
import threading
import time
from dataclasses import dataclass, field

from werkzeug import Request, Response

LOGPROB_BY_LANE = {
    "auto": math.log(0.99),
    "async": math.log(0.80),
    "blocking": math.log(0.30),
}


@dataclass
class FakeModel:
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()

    def calls_for(self, needle: str) -> list[dict]:
        """Requests whose user message contains ``needle``."""
        with self.lock:
            return [r for r in self.requests if needle in _user_message(r)]

    def handle(self, request: Request) -> Response:
        body = json.loads(request.get_data(as_text=True) or "{}")
        with self.lock:
            self.requests.append(body)
        user = _user_message(body)
        model = body.get("model", "")
        if f"[[down:{model}]]" in user:
            return Response(json.dumps({"error": {"message": f"{model} is down", "type": "server_error"}}),
                            status=503, content_type="application/json")
        lane = next((name for name in LOGPROB_BY_LANE if f"[[lane:{name}]]" in user), "auto")
        if "[[invalid]]" in user:
            content = json.dumps({"reply": "Sorry about that.", "tone": "furious"})
        else:
            # Like a real model, it addresses the customer by whatever name the prompt gives,
            # which is a redaction placeholder when the name field is marked pii.
            name = re.search(r"Customer (\S+) wrote", user)
            greeting = name.group(1) if name else "customer"
            if "[[mangle]]" in user:  # a model that rewrites the placeholder it was given
                greeting = greeting.title()
            content = json.dumps({"reply": f"Dear {greeting}, thank you for writing. ({len(user)} chars read)", "tone": "apologetic"})
        tokens = content.split(" ")
        logprob = LOGPROB_BY_LANE[lane]
        payload = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
                "logprobs": {"content": [
                    {"token": t, "logprob": logprob, "bytes": list(t.encode()), "top_logprobs": []} for t in tokens
                ]},
            }],
            "usage": {"prompt_tokens": len(user.split()), "completion_tokens": len(tokens),
                      "total_tokens": len(user.split()) + len(tokens)},
        }
        return Response(json.dumps(payload), status=200, content_type="application/json")


def _user_message(body: dict) -> str:
    return "\n".join(m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user")
