"""ReviewDesk settings, driven by the environment (see .env.example).

With nothing configured the app runs on an embedded default: a SQLite file and kombu's
filesystem broker under ./var, and the offline draft engine. Production (DJANGO_DEBUG=false)
refuses to start without a real secret key.
"""
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url

from .env import ImproperlyConfiguredEnv, env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

DEBUG = env_bool("DJANGO_DEBUG", True)

_DEV_SECRET = "dev-insecure-reviewdesk-key-do-not-use-in-production"
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfiguredEnv(
            "DJANGO_SECRET_KEY is required when DJANGO_DEBUG=false; generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`."
        )
    SECRET_KEY = _DEV_SECRET
elif not DEBUG and (SECRET_KEY == _DEV_SECRET or len(SECRET_KEY) < 32 or "change-me" in SECRET_KEY):
    raise ImproperlyConfiguredEnv("DJANGO_SECRET_KEY is a default or too short (min 32 chars).")

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfiguredEnv("DJANGO_ALLOWED_HOSTS is required when DJANGO_DEBUG=false.")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "simple_history",
    "workflows",
    "calibration",
    "evals",
    "costs",
]

MIDDLEWARE = [
    # First: a lost database connection is reconnected for reads, refused cleanly otherwise
    # (workflows/db_resilience.py, issue 10).
    "workflows.db_resilience.DatabaseReconnectMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Django's, noting a session lost under database faults (workflows/db_resilience.py).
    "workflows.db_resilience.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "workflows.middleware.RequestContextMiddleware",
    "workflows.denials.DeniedAccessMiddleware",
]

ROOT_URLCONF = "reviewdesk.urls"
WSGI_APPLICATION = "reviewdesk.wsgi.application"
ASGI_APPLICATION = "reviewdesk.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "workflows.context_processors.reviewdesk",
            ],
        },
    },
]

# Database: PostgreSQL through psycopg 3 with Django's built-in pool, or the SQLite default.
DATABASE_URL = env_str("DATABASE_URL", "")
if DATABASE_URL:
    try:
        _db = dj_database_url.parse(DATABASE_URL)
    except Exception as exc:  # dj_database_url raises several types for a malformed URL
        raise ImproperlyConfiguredEnv(f"DATABASE_URL is not a valid database URL: {exc}") from None
    if _db["ENGINE"] == "django.db.backends.postgresql":
        # The pool replaces persistent connections; Django refuses CONN_MAX_AGE with a pool.
        _db["CONN_MAX_AGE"] = 0
        # With the pool, Django 5.2 passes check=ConnectionPool.check_connection to psycopg_pool
        # when this is true: each connection is checked at checkout, so one the server dropped
        # is replaced instead of failing the request or task that drew it. (A "check" key in
        # OPTIONS["pool"] would raise TypeError in 5.2; see workflows/db_resilience.py.)
        _db["CONN_HEALTH_CHECKS"] = True
        _db.setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": env_int("REVIEWDESK_DB_POOL_MAX", 10, minimum=1),
            "timeout": 10,
        }
else:
    VAR_DIR.mkdir(exist_ok=True)
    _db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / "db.sqlite3",
        # The web process and the worker write to the same file; wait instead of failing.
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
    }
DATABASES = {"default": _db}
# The owner role's URL, for `manage.py migrate` (and setup_db_roles) only; DATABASE_URL is then the
# runtime role, which owns nothing (workflows/db_roles.py, docs/OPERATIONS.md "Database roles").
# Empty: one role does both (make run, the tests, a single-role deployment).
DATABASE_MIGRATE_URL = env_str("DATABASE_MIGRATE_URL", "")

# Seconds between checks of the idle pooled connections in each web process, so that dead ones
# (a database restart or failover) are replaced before requests draw them; 0 turns it off
# (workflows/db_resilience.py).
REVIEWDESK_DB_POOL_CHECK_SECONDS = env_float("REVIEWDESK_DB_POOL_CHECK_SECONDS", 2.0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

if DEBUG:
    # Development serves static files through the finders; STATIC_ROOT exists only after
    # collectstatic, and whitenoise would warn about it on every start.
    import warnings

    warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)

# Django's database sessions, loaded with a statement written once (workflows/sessions.py).
SESSION_ENGINE = "workflows.sessions"
SESSION_COOKIE_HTTPONLY = True
# Secure cookies by default in production; a plain-HTTP trial deployment can turn them off.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
# Behind a TLS-terminating proxy Django sees plain HTTP; these make it trust the proxy's
# header and accept the public origin in CSRF checks (otherwise every POST is a 403).
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
if env_bool("DJANGO_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Celery. Redis when REDIS_URL is set; otherwise kombu's filesystem transport, which needs no
# server and still lets a separate worker process consume (see docs/ARCHITECTURE.md).
REDIS_URL = env_str("REDIS_URL", "")
# Prefix of every name this deployment uses on the broker and in the Redis cache: the Celery
# queues (<prefix>llm, <prefix>celery) and the cache keys (<prefix>reviewdesk:...). Empty in a
# normal deployment; the test suite gives each run its own so that two runs (or two deployments)
# sharing one Redis never take each other's tasks or read each other's cache.
REVIEWDESK_NAMESPACE = env_str("REVIEWDESK_NAMESPACE", "")
if not re.fullmatch(r"[A-Za-z0-9_.-]*", REVIEWDESK_NAMESPACE):
    raise ImproperlyConfiguredEnv(
        f"REVIEWDESK_NAMESPACE={REVIEWDESK_NAMESPACE!r} may only use letters, digits, '_', '.' and '-'."
    )
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
else:
    _broker_dir = VAR_DIR / "broker"
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
# Django's cache: Redis when configured (shared by every worker: the draft cache, circuit
# breakers, parameter memory), process memory for the embedded default.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "drafts": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{REVIEWDESK_NAMESPACE}reviewdesk",
    }
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "drafts"},
}
# Pages one web process streams drafts to at once (workflows/draft_stream_hub.py: they share one
# Redis reader, so this bounds memory and sockets, not Redis connections); the next page polls.
REVIEWDESK_SSE_MAX_WATCHERS = env_int("REVIEWDESK_SSE_MAX_WATCHERS", 500, minimum=1)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("REVIEWDESK_TASK_TIME_LIMIT", 300, minimum=10)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 5
# Workers consume both queues: `celery worker -Q <prefix>llm,<prefix>celery`.
REVIEWDESK_LLM_QUEUE = f"{REVIEWDESK_NAMESPACE}llm"
CELERY_TASK_ROUTES = {
    "workflows.tasks.generate_draft": {"queue": REVIEWDESK_LLM_QUEUE},
    # Eval cases call the model too: same queue, same concurrency as drafting (evals/tasks.py).
    "evals.tasks.run_eval_case": {"queue": REVIEWDESK_LLM_QUEUE},
}
CELERY_TASK_DEFAULT_QUEUE = f"{REVIEWDESK_NAMESPACE}celery"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The worker logs through Django's LOGGING (below), so its lines carry the request id too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Model provider. Without a key the offline draft engine is used and labelled in the UI.
OPENAI_API_KEY = env_str("OPENAI_API_KEY", "")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL", "") or None
REVIEWDESK_DEFAULT_MODEL = env_str("REVIEWDESK_DEFAULT_MODEL", "gpt-4o-mini")
# Seconds one request may take in all (connect + wait for the whole answer), and to connect.
REVIEWDESK_LLM_TIMEOUT = env_float("REVIEWDESK_LLM_TIMEOUT", 30.0)
REVIEWDESK_LLM_CONNECT_TIMEOUT = env_float("REVIEWDESK_LLM_CONNECT_TIMEOUT", 5.0)
# Retries after a failed request (timeouts, connection errors, 429, 5xx), in the engine only.
REVIEWDESK_LLM_MAX_RETRIES = env_int("REVIEWDESK_LLM_MAX_RETRIES", 2, minimum=0)
# Longest pause before a retry; a server's retry-after beyond it is not waited for (the next
# model is tried instead).
REVIEWDESK_LLM_RETRY_WAIT_CAP = env_float("REVIEWDESK_LLM_RETRY_WAIT_CAP", 3.0)
# The most models a workflow may list (primary, fallbacks and escalate_to together).
REVIEWDESK_LLM_MAX_MODELS = env_int("REVIEWDESK_LLM_MAX_MODELS", 3, minimum=1)
# Circuit breaker per provider and model, shared through Redis: failures in a row that open it,
# and seconds it stays open before one trial request.
REVIEWDESK_LLM_BREAKER_FAIL_MAX = env_int("REVIEWDESK_LLM_BREAKER_FAIL_MAX", 5, minimum=1)
REVIEWDESK_LLM_BREAKER_RESET_SECONDS = env_int("REVIEWDESK_LLM_BREAKER_RESET_SECONDS", 30, minimum=1)
# Seconds a parameter a server refused (json_schema, logprobs, ...) is left out of its requests.
REVIEWDESK_LLM_PARAMETER_MEMORY_SECONDS = env_int("REVIEWDESK_LLM_PARAMETER_MEMORY_SECONDS", 3600, minimum=0)
if not (REVIEWDESK_LLM_TIMEOUT > 0 and REVIEWDESK_LLM_CONNECT_TIMEOUT > 0):
    raise ImproperlyConfiguredEnv("REVIEWDESK_LLM_TIMEOUT and REVIEWDESK_LLM_CONNECT_TIMEOUT must be more than 0 seconds.")
if REVIEWDESK_LLM_RETRY_WAIT_CAP < 0:
    raise ImproperlyConfiguredEnv(f"REVIEWDESK_LLM_RETRY_WAIT_CAP={REVIEWDESK_LLM_RETRY_WAIT_CAP} must not be negative.")
# Every try of every model a workflow may list must fit in one task: the same sum as the
# engine's per-model budget (engines/openai.py budget_seconds), times the models.
_LLM_MODEL_SECONDS = (
    REVIEWDESK_LLM_TIMEOUT * (REVIEWDESK_LLM_MAX_RETRIES + 1) + REVIEWDESK_LLM_MAX_RETRIES * REVIEWDESK_LLM_RETRY_WAIT_CAP
)
if _LLM_MODEL_SECONDS * REVIEWDESK_LLM_MAX_MODELS >= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfiguredEnv(
        f"Model calls cannot fit in one task: REVIEWDESK_LLM_TIMEOUT={REVIEWDESK_LLM_TIMEOUT:g} s x "
        f"(REVIEWDESK_LLM_MAX_RETRIES={REVIEWDESK_LLM_MAX_RETRIES} + 1) + {REVIEWDESK_LLM_MAX_RETRIES} x "
        f"REVIEWDESK_LLM_RETRY_WAIT_CAP={REVIEWDESK_LLM_RETRY_WAIT_CAP:g} s = {_LLM_MODEL_SECONDS:g} s per model, "
        f"x REVIEWDESK_LLM_MAX_MODELS={REVIEWDESK_LLM_MAX_MODELS} = {_LLM_MODEL_SECONDS * REVIEWDESK_LLM_MAX_MODELS:g} s, "
        f"must be less than the task's soft time limit of {CELERY_TASK_SOFT_TIME_LIMIT} s "
        f"(REVIEWDESK_TASK_TIME_LIMIT={CELERY_TASK_TIME_LIMIT} - 5). Lower the timeout, retries or models, "
        f"or raise REVIEWDESK_TASK_TIME_LIMIT."
    )
# The whole pipeline run (draft, retries, fallbacks, repair, samples, QA, cascade) stops
# starting calls this long before the soft time limit, so the task always has time to store
# what it paid for. (The threads pool that runs the llm queue enforces no time limits itself.)
REVIEWDESK_RUN_BUDGET_SECONDS = CELERY_TASK_SOFT_TIME_LIMIT - 15
# The draft cache (pipeline/cache.py): seconds a temperature-0 answer is reused.
REVIEWDESK_CACHE_TTL_SECONDS = env_int("REVIEWDESK_CACHE_TTL_SECONDS", 86400, minimum=0)
REVIEWDESK_DRAFT_CACHE = "drafts"
# Price table overrides (pipeline/pricing.py): a JSON object or the path to a JSON file.
REVIEWDESK_PRICES = env_str("REVIEWDESK_PRICES", "")
REVIEWDESK_LEASE_MINUTES = env_int("REVIEWDESK_LEASE_MINUTES", 15, minimum=1)
# The review page's heartbeat (every minute while the reviewer is active) keeps the lease this
# far ahead; a reviewer who leaves loses it this long after their last heartbeat.
REVIEWDESK_LEASE_RENEW_MINUTES = env_int("REVIEWDESK_LEASE_RENEW_MINUTES", 5, minimum=2)
# A claim (Next, Claim) commits without waiting for the WAL flush (PostgreSQL's synchronous_commit
# off for that transaction only): a crash may lose the last fraction of a second of claims, each
# with its audit event, never a decision. False: every claim waits for the disk.
REVIEWDESK_CLAIM_ASYNC_COMMIT = env_bool("REVIEWDESK_CLAIM_ASYNC_COMMIT", True)
# Rows per page of every list (submissions, review queues, audit trail): views.common.paginate.
REVIEWDESK_PAGE_SIZE = env_int("REVIEWDESK_PAGE_SIZE", 50, minimum=1)
# A generation claimed longer ago than this is considered abandoned (worker died) and may be
# re-claimed by a redelivered task.
REVIEWDESK_GENERATION_STALE_SECONDS = env_int(
    "REVIEWDESK_GENERATION_STALE_SECONDS", CELERY_TASK_TIME_LIMIT + 60, minimum=CELERY_TASK_TIME_LIMIT + 30
)

# A submission still waiting this long after it was saved lost its task (broker down at commit)
# and is sent again by the periodic sweep.
REVIEWDESK_ENQUEUE_GRACE_SECONDS = env_int("REVIEWDESK_ENQUEUE_GRACE_SECONDS", 120, minimum=5)
# auth.denied audit events per user (or client address) a minute; more refusals are not written,
# so a scanner cannot flood the audit chain (workflows/denials.py).
REVIEWDESK_DENIED_EVENTS_PER_MINUTE = env_int("REVIEWDESK_DENIED_EVENTS_PER_MINUTE", 20, minimum=1)
# A submission that failed because no provider answered is retried automatically, at most
# once per this many seconds, when one of its models' circuits is no longer open.
REVIEWDESK_AUTO_RETRY_SECONDS = env_int("REVIEWDESK_AUTO_RETRY_SECONDS", 60, minimum=5)
# The audit chain at scale (workflows/audit_chain.py, docs/COMPLIANCE.md): seconds between
# checkpointed verifications, and between anchors of the verified head; where anchors are written
# (one new file each, never rewritten: keep it on storage the database host cannot rewrite) and
# the HMAC key that signs them (the database must never hold it; without it nothing is anchored).
REVIEWDESK_AUDIT_VERIFY_SECONDS = env_int("REVIEWDESK_AUDIT_VERIFY_SECONDS", 300, minimum=10)
REVIEWDESK_AUDIT_ANCHOR_SECONDS = env_int("REVIEWDESK_AUDIT_ANCHOR_SECONDS", 3600, minimum=60)
# Seconds between beat's runs of the audit chainer (a safety net; commits trigger it within ~0.3 s).
REVIEWDESK_AUDIT_CHAIN_SECONDS = env_int("REVIEWDESK_AUDIT_CHAIN_SECONDS", 5, minimum=1)
REVIEWDESK_AUDIT_ANCHOR_DIR = Path(env_str("REVIEWDESK_AUDIT_ANCHOR_DIR", str(VAR_DIR / "anchors")))
REVIEWDESK_AUDIT_ANCHOR_KEY = env_str("REVIEWDESK_AUDIT_ANCHOR_KEY", "")
# The publish gate (issue 6): the function that measures a candidate before it is published
# (evals/gate.py), and how far its eval's pass rate may fall below the current version's.
REVIEWDESK_PUBLISH_GATE = env_str("REVIEWDESK_PUBLISH_GATE", "evals.gate.check")
REVIEWDESK_EVAL_MARGIN = env_float("REVIEWDESK_EVAL_MARGIN", 0.05)
# Seconds between scheduled re-runs of each current version's eval (drift). Default: a day.
REVIEWDESK_DRIFT_CHECK_SECONDS = env_int("REVIEWDESK_DRIFT_CHECK_SECONDS", 86400, minimum=600)
if not 0 <= REVIEWDESK_EVAL_MARGIN < 1:
    raise ImproperlyConfiguredEnv(f"REVIEWDESK_EVAL_MARGIN={REVIEWDESK_EVAL_MARGIN} must be a share between 0 and 1.")

# Outgoing e-mail (anchors, budget warnings, alerts, automation holds). Without EMAIL_HOST
# messages go to the log (the console backend).
# A second anchor target (workflows/audit_chain.py EmailTarget): the signed anchor is also
# e-mailed to these compliance addresses (comma-separated). Needs EMAIL_HOST: an anchor that
# cannot leave the building is no anchor, so the console backend is never used for it.
REVIEWDESK_AUDIT_ANCHOR_EMAIL = env_list("REVIEWDESK_AUDIT_ANCHOR_EMAIL", [])
EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "reviewdesk@localhost")
EMAIL_BACKEND = ("django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST
                 else "django.core.mail.backends.console.EmailBackend")
if REVIEWDESK_AUDIT_ANCHOR_EMAIL and not EMAIL_HOST:
    raise ImproperlyConfiguredEnv("REVIEWDESK_AUDIT_ANCHOR_EMAIL needs EMAIL_HOST (an SMTP server) to send anchors.")
# Audit export jobs (issue 7): where a worker writes export files and their manifests, and the
# largest export (in rows) the compliance page still streams inside the request; bigger ones
# are offered only as a job.
REVIEWDESK_EXPORT_DIR = Path(env_str("REVIEWDESK_EXPORT_DIR", str(VAR_DIR / "exports")))
REVIEWDESK_EXPORT_STREAM_MAX_ROWS = env_int("REVIEWDESK_EXPORT_STREAM_MAX_ROWS", 200_000, minimum=0)
# Days a finished export job's file and manifest are kept in REVIEWDESK_EXPORT_DIR; then the
# purge_audit_export_jobs task deletes them and the job (the audit chain keeps its record).
REVIEWDESK_EXPORT_RETENTION_DAYS = env_int("REVIEWDESK_EXPORT_RETENTION_DAYS", 30, minimum=1)

# A worker that dies mid-draft (issue 10): the task holding a generation claim refreshes its
# heartbeat every REVIEWDESK_HEARTBEAT_SECONDS; a claim without a beat for
# REVIEWDESK_HEARTBEAT_STALE_SECONDS is taken over by the sweep, which runs every
# REVIEWDESK_SWEEP_SECONDS. Worst case from a worker's death to a new attempt: stale + sweep
# (20 + 15 s by default), within the minute the issue asks for.
REVIEWDESK_HEARTBEAT_SECONDS = env_int("REVIEWDESK_HEARTBEAT_SECONDS", 5, minimum=1)
REVIEWDESK_HEARTBEAT_STALE_SECONDS = env_int("REVIEWDESK_HEARTBEAT_STALE_SECONDS", 20, minimum=3)
if REVIEWDESK_HEARTBEAT_STALE_SECONDS < 3 * REVIEWDESK_HEARTBEAT_SECONDS:
    raise ImproperlyConfiguredEnv(
        f"REVIEWDESK_HEARTBEAT_STALE_SECONDS={REVIEWDESK_HEARTBEAT_STALE_SECONDS} must be at least three "
        f"heartbeats (3 x REVIEWDESK_HEARTBEAT_SECONDS={REVIEWDESK_HEARTBEAT_SECONDS}), so that a busy "
        f"database or a slow beat does not make a live worker's claim look abandoned."
    )
REVIEWDESK_SWEEP_SECONDS = env_int("REVIEWDESK_SWEEP_SECONDS", 15, minimum=1)
# An eval run with no case finished for this long has lost its cases to a dead worker (no live
# worker can still be inside one past the task's hard time limit); the sweep re-sends them, at
# most evals.services.EVAL_RESENDS times this long apart, then fails the run with the reason.
REVIEWDESK_EVAL_STALL_SECONDS = env_int("REVIEWDESK_EVAL_STALL_SECONDS", CELERY_TASK_TIME_LIMIT + 60, minimum=5)
CELERY_BEAT_SCHEDULE = {
    "requeue-stalled-generations": {"task": "workflows.tasks.requeue_stalled_generations",
                                    "schedule": float(REVIEWDESK_SWEEP_SECONDS)},
    # evals/services.py eval_runs_sweep: the missing cases of eval runs whose worker died.
    "sweep-stalled-eval-runs": {"task": "evals.tasks.sweep_stalled_eval_runs",
                                "schedule": float(REVIEWDESK_SWEEP_SECONDS)},
    "retry-failed-generations": {"task": "workflows.tasks.retry_failed_generations", "schedule": 30.0},
    "verify-audit-checkpoint": {"task": "workflows.tasks.verify_audit_checkpoint",
                                "schedule": float(REVIEWDESK_AUDIT_VERIFY_SECONDS)},
    "anchor-audit-head": {"task": "workflows.tasks.anchor_audit_head",
                          "schedule": float(REVIEWDESK_AUDIT_ANCHOR_SECONDS)},
    # Safety net of the audit chainer (each commit that records events sends chain_audit a moment
    # later, workflows/audit.py request_chaining): links what a lost message left waiting.
    "chain-audit": {"task": "workflows.tasks.chain_audit", "schedule": float(REVIEWDESK_AUDIT_CHAIN_SECONDS),
                    "options": {"expires": float(REVIEWDESK_AUDIT_CHAIN_SECONDS)}},
    # Export jobs: re-send a task message lost while the broker was down; delete old files.
    "resend-queued-audit-exports": {"task": "workflows.tasks.resend_queued_audit_exports", "schedule": 60.0},
    "purge-audit-export-jobs": {"task": "workflows.tasks.purge_audit_export_jobs", "schedule": 3600.0},
    # Retention is counted in days; hourly is plenty and keeps each run small.
    "purge-expired-submissions": {"task": "workflows.tasks.purge_expired_submissions", "schedule": 3600.0},
    # calibration/monitor.py: the live escape rate of each workflow from its reviewed audit sample.
    "quality-monitor": {"task": "calibration.tasks.quality_monitor", "schedule": 300.0},
    # evals/services.py drift_start_all: the current versions' evals again, to catch a provider
    # changing a model under the same name.
    "eval-drift-check": {"task": "evals.tasks.drift_check", "schedule": float(REVIEWDESK_DRIFT_CHECK_SECONDS)},
}

# --- Security (issue 10; docs/ARCHITECTURE.md "Security (issue 10)") ----------------------
# Login throttling with django-axes: after REVIEWDESK_LOGIN_FAILURE_LIMIT failed log-ins for one
# username from one client address, that pair is refused (even with the right password) for
# REVIEWDESK_LOGIN_COOLOFF_MINUTES. The database handler keeps the counts, so every gunicorn
# worker and the admin site share them on SQLite and PostgreSQL alike, with no cache to set up.
INSTALLED_APPS += ["axes", "csp"]
AUTHENTICATION_BACKENDS = [
    # First, so a locked-out pair is refused before the password is even checked.
    "axes.backends.AxesStandaloneBackend",
    # Django's, reading the user's groups with the user (one statement a request, not two).
    "workflows.auth_backends.ModelBackend",
]
# axes' database handler, with an audit event per failed log-in and lockout (workflows/logins.py).
AXES_HANDLER = "workflows.logins.AuditedAxesHandler"
AXES_FAILURE_LIMIT = env_int("REVIEWDESK_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("REVIEWDESK_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# A try during a lockout neither counts nor restarts the cool-off: a person who finds the right
# password a minute later is let in when the cool-off that was announced ends.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "workflows.logins.lockout_response"
# Successful log-ins are not copied into axes' own access log (address and browser of every
# session): the audit chain is the record, and it keeps no more personal data than it needs.
AXES_DISABLE_ACCESS_LOG = True
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "csrfmiddlewaretoken"]
# Log lines name only the lockout parameters, masked (no browser string), and no start-up banner.
AXES_VERBOSE = False

# Production defaults (DJANGO_DEBUG=false): HTTPS only, announced with HSTS. Behind a proxy that
# redirects to HTTPS itself, DJANGO_SSL_REDIRECT=false; the health endpoints always answer over
# plain HTTP, since the container healthcheck and the cluster probes call them without TLS.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SSL_REDIRECT", not DEBUG)
# /metrics too: Prometheus scrapes each web container from inside the deployment over plain
# HTTP (web:8000), and the bearer token, not the scheme, protects it.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", False)
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# No script reads the CSRF cookie (htmx sends the token from the page, base.html hx-headers).
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
# A session lasts a working day, not Django's two weeks.
SESSION_COOKIE_AGE = env_int("DJANGO_SESSION_COOKIE_AGE", 12 * 3600, minimum=300)
SILENCED_SYSTEM_CHECKS = []
if not SECURE_HSTS_PRELOAD:
    # security.W021 asks for HSTS preload. Preloading puts the whole registrable domain into
    # browsers' built-in HTTPS-only list, for months, and is the domain owner's decision (it is
    # meaningless on a subdomain such as reviewdesk.example.com): off unless DJANGO_HSTS_PRELOAD=true.
    SILENCED_SYSTEM_CHECKS.append("security.W021")
if not SECURE_SSL_REDIRECT and env_bool("DJANGO_BEHIND_TLS_PROXY", False):
    # security.W008 asks for SECURE_SSL_REDIRECT. With DJANGO_BEHIND_TLS_PROXY=true and
    # DJANGO_SSL_REDIRECT=false the deployment says the TLS proxy redirects; without the proxy
    # flag the warning stays, because then nothing sends plain HTTP to HTTPS.
    SILENCED_SYSTEM_CHECKS.append("security.W008")

# Content-Security-Policy (django-csp 4): scripts, styles and everything else from this site
# only; no inline script, inline style or eval anywhere (templates carry none, and htmx is told
# not to inject its indicator <style> or to eval: base.html's htmx-config).
MIDDLEWARE += ["csp.middleware.CSPMiddleware"]
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# axes turns a locked-out log-in into its answer here, so it comes last (axes' documentation).
MIDDLEWARE += ["axes.middleware.AxesMiddleware"]
# Costs, budgets and alerts (issue 9, costs/). The generation gate is how workflows asks costs
# whether a workflow may spend (workflows/gate.py); workflows never imports costs.
REVIEWDESK_GENERATION_GATE = "costs.budgets.generation_gate"
# Seconds between evaluations of the alert rules, the budget warnings and the resumption of
# submissions held by a spent budget.
REVIEWDESK_ALERT_EVALUATE_SECONDS = env_int("REVIEWDESK_ALERT_EVALUATE_SECONDS", 60, minimum=10)
# Outgoing e-mail (budget warnings, alerts, anchors): EMAIL_* above, with the anchor target.
CELERY_BEAT_SCHEDULE.update({
    "costs-evaluate": {"task": "costs.tasks.evaluate_costs", "schedule": float(REVIEWDESK_ALERT_EVALUATE_SECONDS)},
})

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "reviewdesk.observability.RequestIdFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s [%(request_id)s] %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": env_str("REVIEWDESK_LOG_LEVEL", "INFO")},
    "loggers": {"httpx": {"level": "WARNING"}, "httpx2": {"level": "WARNING"}},
}

# --- Metrics, logs and traces (issue 9; docs/ARCHITECTURE.md "Metrics, logs and traces") ------
# django-prometheus times every request (its middleware goes first and last); GET /metrics
# (reviewdesk/metrics.py) adds ReviewDesk's own metrics, read from the database at scrape time.
INSTALLED_APPS += ["django_prometheus"]
MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    *MIDDLEWARE,
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]
# Bearer token Prometheus sends to GET /metrics. Unset: 404 in production, open with DEBUG only.
REVIEWDESK_METRICS_TOKEN = env_str("REVIEWDESK_METRICS_TOKEN", "")
if REVIEWDESK_METRICS_TOKEN and len(REVIEWDESK_METRICS_TOKEN) < 16:
    raise ImproperlyConfiguredEnv("REVIEWDESK_METRICS_TOKEN must be at least 16 characters.")
# plain: readable lines (development); json: one JSON object per line through structlog
# (production). Both carry the request id.
REVIEWDESK_LOG_FORMAT = env_str("REVIEWDESK_LOG_FORMAT", "plain" if DEBUG else "json").lower()
if REVIEWDESK_LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfiguredEnv(f"REVIEWDESK_LOG_FORMAT={REVIEWDESK_LOG_FORMAT!r} must be plain or json.")
LOGGING["formatters"]["json"] = {"()": "reviewdesk.logs.json_formatter"}
LOGGING["handlers"]["console"]["formatter"] = REVIEWDESK_LOG_FORMAT
from .logs import configure_structlog  # noqa: E402

configure_structlog()
# OpenTelemetry traces of each draft (reviewdesk/tracing.py), sent over OTLP/HTTP when an
# endpoint is set; the exporter reads the other OTEL_* variables itself. Unset: no tracing.
OTEL_EXPORTER_OTLP_ENDPOINT = env_str("OTEL_EXPORTER_OTLP_ENDPOINT", "")
OTEL_SERVICE_NAME = env_str("OTEL_SERVICE_NAME", "reviewdesk")

# axes logs four INFO lines for every successful log-in; its warnings (failures, lockouts) stay.
LOGGING["loggers"]["axes"] = {"level": "WARNING"}

# --- Notifications and SLA (issue 8; docs/ARCHITECTURE.md "Notifications and SLA") ----------
# The address people open ReviewDesk at: e-mails carry absolute links to it (a review, a
# request, the preferences page), which open the item after login.
REVIEWDESK_SITE_URL = env_str("REVIEWDESK_SITE_URL", "http://localhost:8000").rstrip("/")
if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", REVIEWDESK_SITE_URL):
    raise ImproperlyConfiguredEnv(
        f"REVIEWDESK_SITE_URL={REVIEWDESK_SITE_URL!r} must be an http(s) address such as https://reviewdesk.example.org"
    )
# Seconds between SLA checks (mark overdue reviews, escalate those past the second limit), and
# minutes between the reviewers' digests of new blocking reviews.
REVIEWDESK_SLA_CHECK_SECONDS = env_int("REVIEWDESK_SLA_CHECK_SECONDS", 60, minimum=10)
REVIEWDESK_DIGEST_MINUTES = env_int("REVIEWDESK_DIGEST_MINUTES", 10, minimum=1)
# Tries per e-mail before it is given up (logged as an error); the waits between tries double
# from one minute up to an hour.
REVIEWDESK_MAIL_MAX_ATTEMPTS = env_int("REVIEWDESK_MAIL_MAX_ATTEMPTS", 8, minimum=1)
# Days an e-mail's outbox row is kept once it is sent, skipped or given up; then the hourly
# purge_notifications task deletes it (pending rows are never deleted). 0 keeps them forever.
REVIEWDESK_NOTIFICATION_RETENTION_DAYS = env_int("REVIEWDESK_NOTIFICATION_RETENTION_DAYS", 30, minimum=0)
CELERY_BEAT_SCHEDULE.update({
    "review-sla-check": {"task": "workflows.tasks.check_review_sla", "schedule": float(REVIEWDESK_SLA_CHECK_SECONDS)},
    "review-digest": {"task": "workflows.tasks.send_review_digests", "schedule": 60.0 * REVIEWDESK_DIGEST_MINUTES},
    # E-mails whose first try failed (or whose task was lost with the broker), when their wait is over.
    "deliver-notifications": {"task": "workflows.tasks.deliver_notifications", "schedule": 60.0},
    # Retention is counted in days; hourly keeps each run small, as for the export jobs.
    "purge-notifications": {"task": "workflows.tasks.purge_notifications", "schedule": 3600.0},
})
