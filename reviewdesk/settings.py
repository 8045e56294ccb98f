"""ReviewDesk settings, driven by the environment (see .env.example).

With nothing configured the app runs on an embedded default: a SQLite file and kombu's
filesystem broker under ./var, and the offline draft engine. Production (DJANGO_DEBUG=false)
refuses to start without a real secret key.
"""
import re
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
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
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
        # A connection held across a database restart is checked before reuse, not failed on.
        _db["CONN_HEALTH_CHECKS"] = True
        # (Django's pool already checks each connection at checkout, so one the server
        # dropped is replaced instead of failing the task that drew it.)
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
CELERY_TASK_ROUTES = {"workflows.tasks.generate_draft": {"queue": REVIEWDESK_LLM_QUEUE}}
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
REVIEWDESK_AUDIT_ANCHOR_DIR = Path(env_str("REVIEWDESK_AUDIT_ANCHOR_DIR", str(VAR_DIR / "anchors")))
REVIEWDESK_AUDIT_ANCHOR_KEY = env_str("REVIEWDESK_AUDIT_ANCHOR_KEY", "")
CELERY_BEAT_SCHEDULE = {
    "requeue-stalled-generations": {"task": "workflows.tasks.requeue_stalled_generations", "schedule": 60.0},
    "retry-failed-generations": {"task": "workflows.tasks.retry_failed_generations", "schedule": 30.0},
    "verify-audit-checkpoint": {"task": "workflows.tasks.verify_audit_checkpoint",
                                "schedule": float(REVIEWDESK_AUDIT_VERIFY_SECONDS)},
    "anchor-audit-head": {"task": "workflows.tasks.anchor_audit_head",
                          "schedule": float(REVIEWDESK_AUDIT_ANCHOR_SECONDS)},
    # Retention is counted in days; hourly is plenty and keeps each run small.
    "purge-expired-submissions": {"task": "workflows.tasks.purge_expired_submissions", "schedule": 3600.0},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "reviewdesk.observability.RequestIdFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s [%(request_id)s] %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": env_str("REVIEWDESK_LOG_LEVEL", "INFO")},
    "loggers": {"httpx": {"level": "WARNING"}, "httpx2": {"level": "WARNING"}},
}
