# ReviewDesk developer commands.
#
#   make run      migrate, seed the demo data, start a Celery worker and the dev server
#                 (embedded SQLite + filesystem broker unless DATABASE_URL / REDIS_URL are set)
#   make test     check PostgreSQL, Redis and chromium are there, then run pytest
#                 (extra pytest arguments: make test PYTEST_ARGS="-k audit -x")
#   make bench    measure ReviewDesk against bare Celery on real PostgreSQL, Redis and workers
#                 (tests/bench, a few minutes; its own database, Redis db 11 and queue names;
#                 extra arguments: make bench BENCH_ARGS="--concurrency 100 --drafts 500")
#   make migrate  apply migrations
#   make seed     load the demo users and workflows
#   make clean    delete var/ (SQLite db, filesystem broker) and the virtualenv

PY := .venv/bin/python
PYTEST_ARGS ?=
BENCH_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help venv run test bench migrate seed clean

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
# `make run` keeps using the embedded SQLite database and filesystem broker.
test: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
test: export REDIS_URL ?= redis://127.0.0.1:6379/15
test: venv
	$(PY) scripts/check_services.py
	$(PY) -m pytest $(PYTEST_ARGS)

# Not part of `make test` (pytest collects test_*.py only). It creates and drops its own
# database reviewdesk_bench_<pid> on BENCH_PG_URL's server and uses Redis db 11 with its own
# queue names, so it can run beside a test run. It measures: it exits 0 even when a target is
# missed (and prints MISSED), non-zero only when it cannot run.
bench: export BENCH_PG_URL ?= postgres://postgres@127.0.0.1:5432/postgres
bench: export BENCH_REDIS_URL ?= redis://127.0.0.1:6379/11
bench: venv
	$(PY) -m tests.bench.run_bench $(BENCH_ARGS)

migrate: venv
	mkdir -p var
	$(PY) manage.py migrate --noinput

seed: venv
	mkdir -p var
	$(PY) manage.py seed_demo

clean:
	rm -rf var .venv
