# ReviewDesk developer commands.
#
#   make run      migrate, seed the demo data, start a Celery worker and the dev server
#                 (embedded SQLite + filesystem broker unless DATABASE_URL / REDIS_URL are set)
#   make test     check PostgreSQL, Redis and chromium are there, then run pytest: every test,
#                 ruff and `makemigrations --check` included (tests/unit/test_repo_checks.py)
#                 (extra pytest arguments: make test PYTEST_ARGS="-k audit -x")
#   make test-pure  only the tests that need no service (pytest -m pure), with none configured
#   make bench    measure ReviewDesk against bare Celery on real PostgreSQL, Redis and workers
#                 (tests/bench, a few minutes; its own database, Redis db 11 and queue names;
#                 extra arguments: make bench BENCH_ARGS="--concurrency 100 --drafts 500")
#   make bench-load  only the load bench: gunicorn + workers under locust, 20 reviewers and
#                 submitters at a rising rate, then a 10x spike (about 6 minutes; part of make bench;
#                 extra arguments: make bench-load BENCH_LOAD_ARGS="--steps 2,4,8 --step-seconds 60")
#   make migrate  apply migrations
#   make seed     load the demo users and workflows
#   make clean    delete var/ (SQLite db, filesystem broker) and the virtualenv

PY := .venv/bin/python
PYTEST_ARGS ?=
BENCH_ARGS ?=
BENCH_LOAD_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help venv run test test-pure bench bench-load migrate seed clean

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

venv: .venv/.installed

.venv/.installed: requirements.txt
	python3 -m venv .venv
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $@

run: venv
	bash scripts/dev.sh

# Tests always run against real services. These defaults apply to `make test` only, so
# `make run` keeps using the embedded SQLite database and filesystem broker. Each pytest run
# creates its own database (test_reviewdesk_<pid>_<random>, dropped at the end) and its own
# Celery queues and cache keys in this Redis database (tests/conftest.py), so two runs at
# once on one machine do not disturb each other. Any non-zero pytest status fails, including
# 5 (no tests ran).
test: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
test: export REDIS_URL ?= redis://127.0.0.1:6379/15
test: venv
	$(PY) scripts/check_services.py
	$(PY) -m pytest $(PYTEST_ARGS)

# No PostgreSQL, Redis or browser needed: the tests none of whose fixtures reach a service.
test-pure: venv
	env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest -m pure $(PYTEST_ARGS)

# Not part of `make test` (pytest collects test_*.py only). It creates and drops its own
# database reviewdesk_bench_<pid> on BENCH_PG_URL's server and uses Redis db 11 with its own
# queue names, so it can run beside a test run. It measures: it exits 0 even when a target is
# missed (and prints MISSED), non-zero only when it cannot run.
bench: export BENCH_PG_URL ?= postgres://postgres@127.0.0.1:5432/postgres
bench: export BENCH_REDIS_URL ?= redis://127.0.0.1:6379/11
# The audit figures (verify, appends, export) run over this many events (issue 7: 1,000,000).
BENCH_AUDIT_EVENTS ?= 1000000
bench: venv
	$(PY) -m tests.bench.run_bench $(BENCH_ARGS)
	$(PY) -m tests.bench.bench_chain --events $(BENCH_AUDIT_EVENTS)
	$(PY) -m tests.bench.bench_export --events $(BENCH_AUDIT_EVENTS)
	$(PY) -m tests.bench.bench_eval
	$(PY) -m tests.bench.bench_queue $(BENCH_QUEUE_ARGS)
	$(PY) -m tests.bench.load $(BENCH_LOAD_ARGS)

# The load bench alone (tests/bench/load.py; same database, Redis and naming rules as bench).
bench-load: export BENCH_PG_URL ?= postgres://postgres@127.0.0.1:5432/postgres
bench-load: export BENCH_REDIS_URL ?= redis://127.0.0.1:6379/11
bench-load: venv
	$(PY) -m tests.bench.load $(BENCH_LOAD_ARGS)

migrate: venv
	mkdir -p var
	$(PY) manage.py migrate --noinput

seed: venv
	mkdir -p var
	$(PY) manage.py seed_demo
	$(PY) manage.py import_eval_cases --demo

clean:
	rm -rf var .venv
