# ReviewDesk developer commands.
#
#   make run      migrate, seed the demo data, start a Celery worker and the dev server
#                 (embedded SQLite + filesystem broker unless DATABASE_URL / REDIS_URL are set)
#   make test     check PostgreSQL, Redis and chromium are there, then run pytest
#                 (extra pytest arguments: make test PYTEST_ARGS="-k audit -x")
#   make migrate  apply migrations
#   make seed     load the demo users and workflows
#   make clean    delete var/ (SQLite db, filesystem broker) and the virtualenv

PY := .venv/bin/python
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help venv run test migrate seed clean

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

migrate: venv
	mkdir -p var
	$(PY) manage.py migrate --noinput

seed: venv
	mkdir -p var
	$(PY) manage.py seed_demo

clean:
	rm -rf var .venv
