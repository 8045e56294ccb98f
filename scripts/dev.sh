#!/usr/bin/env bash
# Local development run: migrate, seed the demo data, then a Celery worker plus the web server
# (uvicorn, ASGI, reloading on code changes). Ctrl-C stops both. Usually started through `make run`.
#
# uvicorn rather than `manage.py runserver`: the submission page's draft stream is an async view
# (server-sent events), which runserver (WSGI) can only answer once the whole draft is written.
# Static files come from whitenoise's finders in DEBUG, as runserver served them. Without
# REDIS_URL there is nothing to stream (no Redis to carry the text): pages poll.
#
# Without DATABASE_URL / REDIS_URL this uses an embedded SQLite database (var/db.sqlite3) and
# a filesystem broker (var/broker), so nothing else needs to be running.
# PORT (default 8000) picks the dev server's port. A .env file, if present, is loaded first.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -f .env ]]; then
    set -a
    # shellcheck disable=SC1091
    source .env
    set +a
fi

PY=.venv/bin/python
CELERY=.venv/bin/celery
if [[ ! -x "$PY" || ! -x "$CELERY" ]]; then
    echo "dev.sh: no virtualenv at .venv (or celery missing from it); run 'make venv' first." >&2
    exit 1
fi

PORT="${PORT:-8000}"

# Hide the password part of a URL (scheme://user:secret@host -> scheme://user:***@host).
redact() { sed -E 's#(://[^:/@]*:)[^@]*@#\1***@#' <<<"$1"; }

if [[ -n "${DATABASE_URL:-}" ]]; then
    db_desc="$(redact "$DATABASE_URL") (DATABASE_URL)"
else
    db_desc="embedded SQLite, var/db.sqlite3 (DATABASE_URL unset)"
fi
if [[ -n "${REDIS_URL:-}" ]]; then
    broker_desc="$(redact "$REDIS_URL") (REDIS_URL)"
else
    broker_desc="filesystem broker, var/broker (REDIS_URL unset)"
fi
if [[ -n "${REDIS_URL:-}" ]]; then
    stream_desc="drafts stream onto the page where the workflow allows"
else
    stream_desc="no Redis: submission pages poll, drafts do not stream"
fi
if [[ -n "${OPENAI_API_KEY:-}" ]]; then
    llm_desc="OpenAI-compatible API at ${OPENAI_BASE_URL:-the OpenAI default endpoint}"
else
    llm_desc="built-in offline draft engine (OPENAI_API_KEY unset)"
fi

# The worker waits on the model far longer than it computes, so it runs a thread pool. On
# PostgreSQL: many threads sharing one bounded connection pool, as docker-compose.yml runs it
# (threads hold a connection only to claim and to record, never during the model call). On the
# embedded SQLite default: a few threads, since every write takes SQLite's one write lock and
# dozens of writers would only queue for it (and time out after 20 s).
case "${DATABASE_URL:-}" in
    postgres://* | postgresql://*)
        worker_threads=200
        worker_db_pool="${REVIEWDESK_DB_POOL_MAX:-8}"
        worker_desc="thread pool, $worker_threads threads, at most $worker_db_pool PostgreSQL connections"
        ;;
    *)
        worker_threads=4
        worker_db_pool="${REVIEWDESK_DB_POOL_MAX:-}"
        worker_desc="thread pool, $worker_threads threads (SQLite takes one writer at a time)"
        ;;
esac
# Queue names follow REVIEWDESK_NAMESPACE, as in reviewdesk/settings.py.
worker_queues="${REVIEWDESK_NAMESPACE:-}llm,${REVIEWDESK_NAMESPACE:-}celery"

cat <<EOF
------------------------------------------------------------------
 ReviewDesk dev run
   database : $db_desc
   broker   : $broker_desc
   drafts   : $llm_desc
   worker   : $worker_desc
   web      : http://127.0.0.1:$PORT/ (uvicorn, ASGI; $stream_desc)
   logins   : submitter, reviewer, compliance, wfadmin
   password : reviewdesk-demo
 Ctrl-C stops the web server and the worker.
------------------------------------------------------------------
EOF

mkdir -p var

"$PY" manage.py migrate --noinput
"$PY" manage.py seed_demo
"$PY" manage.py import_eval_cases --demo

worker_pid=""
web_pid=""

alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

cleanup() {
    local status=$?
    trap - INT TERM HUP EXIT
    if [[ -n "$worker_pid$web_pid" ]]; then
        echo
        echo "dev.sh: stopping worker and web server..."
        # Both children run in their own session (setsid), so each is a process group leader.
        # The worker gets TERM on its main process only: a warm shutdown that lets running
        # tasks finish and stops its pool itself. uvicorn gets TERM on its whole group, which
        # also reaches the reloader's child that actually serves requests.
        if alive "$worker_pid"; then kill -TERM "$worker_pid" 2>/dev/null || true; fi
        if [[ -n "$web_pid" ]]; then kill -TERM -- "-$web_pid" 2>/dev/null || true; fi
        local i
        for i in $(seq 1 40); do  # up to 20 s
            alive "$worker_pid" || alive "$web_pid" || break
            sleep 0.5
        done
        # Whatever is still there (a stuck task, a pool process) is killed outright.
        local pid
        for pid in $worker_pid $web_pid; do
            kill -KILL -- "-$pid" 2>/dev/null || true
        done
        wait 2>/dev/null || true
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# -B runs the beat scheduler inside the worker (the periodic sweep for lost generation
# tasks); production runs beat as its own service (docker-compose.yml).
REVIEWDESK_DB_POOL_MAX="$worker_db_pool" setsid "$CELERY" -A reviewdesk worker -B -s var/celerybeat-schedule \
    -P threads -c "$worker_threads" -Q "$worker_queues" -l info &
worker_pid=$!

setsid "$PY" -m uvicorn reviewdesk.asgi:application --host 127.0.0.1 --port "$PORT" \
    --reload --reload-dir reviewdesk --reload-dir workflows --reload-dir evals --reload-dir calibration \
    --reload-dir costs &
web_pid=$!

# Run until Ctrl-C, or until either process exits on its own (then stop the other one too).
set +e
wait -n "$worker_pid" "$web_pid"
status=$?
set -e
echo "dev.sh: a child process exited with status $status; shutting down." >&2
exit "$status"
