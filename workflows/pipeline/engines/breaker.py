"""Circuit breakers, one per provider and model, whose state every worker shares.

The library is pybreaker (DESIGN.md section 9): a small, maintained implementation of the
closed / open / half-open machine whose ``CircuitRedisStorage`` keeps the state, the failure
count and the opening time in Redis, so a model that one worker saw fail is skipped by every
other worker and thread too. Without REDIS_URL (the embedded demo run) the state lives in
process memory.

The engine does not wrap its HTTP request in ``CircuitBreaker.call()``: pybreaker holds the
breaker's lock for the whole call, which would queue every thread of a Celery threads pool
behind one slow request to the same model. Instead the engine asks ``allows()`` before each
request and reports what happened afterwards; the report goes through ``call()`` with a
function that returns or raises at once, so pybreaker's own machine still counts failures,
trips, lets the trial request through after ``reset_timeout`` and closes again.

Only provider failures count (timeouts, connection errors, 429, 5xx). A refused parameter or a
client error (bad key, unknown model) says the server is up, and is not reported at all.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pybreaker
from django.conf import settings

log = logging.getLogger(__name__)

CLOSED = pybreaker.STATE_CLOSED  # "closed"
OPEN = pybreaker.STATE_OPEN  # "open"
HALF_OPEN = pybreaker.STATE_HALF_OPEN  # "half-open"
DEFAULT_PROVIDER = "api.openai.com"  # the openai client's own default base URL
KEY_PREFIX = "reviewdesk:circuit"
TRIAL_POLL_SECONDS = 0.2


def _prefix() -> str:
    # REVIEWDESK_NAMESPACE keeps deployments (and test runs) sharing one Redis apart.
    return f"{settings.REVIEWDESK_NAMESPACE}{KEY_PREFIX}"


class _ProviderFailure(Exception):
    """What the breaker is told when a request failed on the provider's side."""


def provider_of(base_url: str | None) -> str:
    """The provider part of a breaker's name: host and port of the base URL."""
    if not base_url:
        return DEFAULT_PROVIDER
    return urlsplit(base_url).netloc or base_url


class ModelCircuit:
    """The breaker of one model at one provider, as the engine uses it."""

    def __init__(self, breaker: pybreaker.CircuitBreaker):
        self._breaker = breaker
        self._holds_trial = False  # this caller took the half-open trial slot

    @property
    def name(self) -> str:
        return self._breaker.name or ""

    def state(self) -> str:
        """closed, open or half-open. An open circuit whose reset timeout has passed reports
        half-open: the next request is let through as the trial."""
        state = self._breaker.current_state
        if state == OPEN and self.seconds_until_trial() <= 0:
            return HALF_OPEN
        return state

    def allows(self) -> bool:
        """May a request go out now? Closed: yes. Open: no. Half-open: only the one caller,
        across every worker and thread, that takes the trial slot; the others wait for its
        outcome instead of all testing a provider that may still hang."""
        state = self.state()
        if state == CLOSED:
            return True
        if state == OPEN:
            return False
        took = _take_trial_slot(self.name)
        self._holds_trial = self._holds_trial or took
        return took

    def wait_for_trial(self, until: float) -> bool:
        """While another caller's trial request is out (half-open), wait for its outcome, up
        to ``until`` (time.monotonic()): True once the circuit lets us through (the trial
        closed it, or the trial slot is ours), False if it opened again or time ran out. An
        open circuit is not waited for: its reset timeout is for the automatic retry."""
        while time.monotonic() < until:
            state = self.state()
            if state == OPEN:
                return False
            if self.allows():
                return True
            time.sleep(TRIAL_POLL_SECONDS)
        return False

    def seconds_until_trial(self) -> float:
        if self._breaker.current_state != OPEN:
            return 0.0
        opened_at = self._breaker._state_storage.opened_at
        if opened_at is None:
            return 0.0
        reopen = opened_at + timedelta(seconds=self._breaker.reset_timeout)
        return max(0.0, (reopen - datetime.now(UTC)).total_seconds())

    def record_success(self) -> None:
        self._report(None)

    def record_failure(self, reason: str) -> None:
        self._report(_ProviderFailure(reason))

    def _report(self, failure: _ProviderFailure | None) -> None:
        # Only the trial's own outcome frees the slot: a request sent while the circuit was
        # closed holds none (and must not free another caller's trial), which also spares a
        # Redis round trip per answer on the drafting hot path.
        if self._holds_trial:
            _free_trial_slot(self.name)
            self._holds_trial = False

        def outcome():
            if failure is not None:
                raise failure

        try:
            self._breaker.call(outcome)
        except _ProviderFailure:
            pass
        except pybreaker.CircuitBreakerError:
            # This failure tripped the breaker, or another worker opened it while our request
            # was in flight (then a late success must not close it early). Either way the
            # stored state is already right.
            pass


_breakers: dict[tuple, pybreaker.CircuitBreaker] = {}
_memory_storage: dict[str, pybreaker.CircuitMemoryStorage] = {}
_redis_clients: dict[str, object] = {}
_lock = threading.Lock()


def circuit_for(model: str, *, base_url: str | None) -> ModelCircuit:
    """The shared breaker for ``model`` at the provider behind ``base_url``."""
    name = f"{_prefix()}:{provider_of(base_url)}:{model}"
    redis_url = settings.REDIS_URL
    key = (name, redis_url)
    with _lock:
        breaker = _breakers.get(key)
        if breaker is None:
            breaker = _new_breaker(name, redis_url)
            if breaker is None:  # Redis unreachable: no breaker this time, try again next call
                return ModelCircuit(pybreaker.CircuitBreaker(name=name))
            _breakers[key] = breaker
    # Thresholds follow the settings (tests shorten them); both are plain attributes.
    breaker.fail_max = settings.REVIEWDESK_LLM_BREAKER_FAIL_MAX
    breaker.reset_timeout = settings.REVIEWDESK_LLM_BREAKER_RESET_SECONDS
    return ModelCircuit(breaker)


def _new_breaker(name: str, redis_url: str) -> pybreaker.CircuitBreaker | None:
    if redis_url:
        try:
            storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, shared_redis(redis_url), namespace=name)
        except Exception:  # a Redis outage must cost the breaker, never the draft
            log.warning("circuit breaker storage unavailable for %s", name, exc_info=True)
            return None
    else:
        storage = _memory_storage.setdefault(name, pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED))
    return pybreaker.CircuitBreaker(
        fail_max=settings.REVIEWDESK_LLM_BREAKER_FAIL_MAX,
        reset_timeout=settings.REVIEWDESK_LLM_BREAKER_RESET_SECONDS,
        state_storage=storage,
        name=name,
    )


def shared_redis(url: str | None = None):
    """The Redis client for breaker and parameter state (thread-safe, one pool per process)."""
    url = url or settings.REDIS_URL
    client = _redis_clients.get(url)
    if client is None:
        import redis

        # Short socket timeouts: a hung Redis must not hold a model call (pybreaker treats a
        # RedisError as "closed" and lets the request through).
        client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        _redis_clients.setdefault(url, client)
    return _redis_clients[url]


# --- the half-open trial slot ------------------------------------------------------------------

_local_trials: dict[str, float] = {}  # without Redis: name -> monotonic time the slot expires


def _trial_seconds() -> int:
    # Held no longer than one request can take, so a worker that dies mid-trial does not keep
    # the circuit shut: the slot expires and the next caller tries.
    return int(settings.REVIEWDESK_LLM_TIMEOUT) + 1


def _take_trial_slot(name: str) -> bool:
    if settings.REDIS_URL:
        try:
            return bool(shared_redis().set(f"{name}:trial", "1", nx=True, ex=_trial_seconds()))
        except Exception:  # without Redis there is no shared slot; let the request through
            log.warning("circuit trial slot unavailable for %s", name, exc_info=True)
            return True
    now = time.monotonic()
    with _lock:
        if _local_trials.get(name, 0) > now:
            return False
        _local_trials[name] = now + _trial_seconds()
        return True


def _free_trial_slot(name: str) -> None:
    if settings.REDIS_URL:
        try:
            shared_redis().delete(f"{name}:trial")
        except Exception:
            log.warning("circuit trial slot unavailable for %s", name, exc_info=True)
        return
    with _lock:
        _local_trials.pop(name, None)


# --- what the rest of the app asks -----------------------------------------------------------


def circuit_state(model: str, *, base_url: str | None = None) -> str:
    """closed, open or half-open for ``model`` at the configured provider (OPENAI_BASE_URL).
    half-open means a request would be let through now as the trial."""
    return circuit_for(model, base_url=_base_url(base_url)).state()


def circuit_states(models: Iterable[str], *, base_url: str | None = None) -> list[tuple[str, str]]:
    """``[(model, state), ...]`` in the order given, e.g. a workflow's model chain."""
    return [(model, circuit_state(model, base_url=base_url)) for model in models]


def seconds_until_any_allows(models: Iterable[str], *, base_url: str | None = None) -> float:
    """How long until at least one of ``models`` accepts a request again: 0.0 when one does
    now. The automatic retry of a generation that failed on open circuits waits this long."""
    waits = [circuit_for(m, base_url=_base_url(base_url)).seconds_until_trial() for m in models]
    return min(waits) if waits else 0.0


def any_circuit_allows(models: Iterable[str], *, base_url: str | None = None) -> bool:
    return seconds_until_any_allows(models, base_url=base_url) <= 0


def reset_circuits(*, base_url: str | None = None) -> int:
    """Close every circuit of the provider (all models, every worker): for tests, and for an
    operator who knows the provider is back. Returns how many breakers were reset."""
    prefix = f"{_prefix()}:{provider_of(_base_url(base_url))}:"
    with _lock:
        for name, storage in _memory_storage.items():
            if name.startswith(prefix):
                storage.state = CLOSED
                storage.reset_counter()
                storage.reset_success_counter()
        reset = sum(1 for name in _memory_storage if name.startswith(prefix))
        for name in [n for n in _local_trials if n.startswith(prefix)]:
            del _local_trials[name]
    if settings.REDIS_URL:
        keys = delete_keys(prefix)
        reset += len({k.rsplit(b":pybreaker:", 1)[0] for k in keys if b":pybreaker:" in k})
    return reset


def delete_keys(prefix: str) -> list[bytes]:
    """Delete every shared Redis key starting with ``prefix``; returns the keys deleted."""
    client = shared_redis()
    keys = list(client.scan_iter(match=f"{glob_escape(prefix)}*", count=500))
    if keys:
        client.delete(*keys)
    return keys


def glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis SCAN pattern (an IPv6 host has brackets)."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _base_url(base_url: str | None) -> str | None:
    return base_url if base_url is not None else settings.OPENAI_BASE_URL
