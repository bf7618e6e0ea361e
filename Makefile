# bsn — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
export DJANGO_SETTINGS_MODULE ?= bsn.settings

.PHONY: run test lint format venv services image bench soak chaos contract clean screenshots browser

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

venv: $(VENV)/.installed

## run: the product on this machine (SQLite, file broker, Docker if it answers) — prints URL, login, token
run: venv
	bash deploy/scripts/run-embedded.sh

## services: install/start PostgreSQL, Redis and Docker where missing
services:
	bash deploy/scripts/test-services.sh

## image: build the ledger image with no registry (cached by content hash)
image: venv services
	DJANGO_SETTINGS_MODULE=bsn.settings_test $(PY) manage.py bsn_images build

## test: the whole suite on PostgreSQL, Redis, Docker and real Celery workers
test: venv services image
	DJANGO_SETTINGS_MODULE=bsn.settings_test $(VENV)/bin/pytest $(PYTEST_ARGS)

## browser: only the browser tests (Playwright driving Debian's chromium; tests/browser, docs/testing.md)
browser: venv services
	DJANGO_SETTINGS_MODULE=bsn.settings_test $(VENV)/bin/pytest -q -m browser tests/browser $(PYTEST_ARGS)

## screenshots: rewrite the portal's pictures in docs/portal/ (login, dashboard desktop and phone;
## operation, app page on a real Docker region, console dashboard)
screenshots: venv services image
	BSN_SCREENSHOTS_DIR=$(CURDIR)/docs/portal DJANGO_SETTINGS_MODULE=bsn.settings_test \
		$(VENV)/bin/pytest -q -m browser tests/browser/test_screenshots.py \
		"tests/browser/test_flows.py::test_create_an_app_and_watch_it_come_up_live" \
		"tests/browser/test_flows.py::test_an_operator_sees_the_dashboard_and_drains_a_region"

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf .data/test .pytest_cache

## contract: schemathesis over the whole API with 40 examples per operation (make test runs 20)
contract: venv services image
	BSN_SCHEMATHESIS_EXAMPLES=$${BSN_SCHEMATHESIS_EXAMPLES:-40} DJANGO_SETTINGS_MODULE=bsn.settings_test \
		$(VENV)/bin/pytest -q tests/contract

## bench: figures as ratios against references measured in the same run (docs/benchmarks.md)
bench: venv services image
	DJANGO_SETTINGS_MODULE=bsn.settings_test $(PY) -m tests.bench $(BENCH)

## soak: the embedded stack (make run) for SOAK_SECONDS (default 1800) with traffic, beat ticks and
## worker SIGKILLs; fails on any crash or lost operation (not in CI: tests/soak.py)
soak: venv
	$(PY) -m tests.soak

## chaos: the chaos tests (worker SIGKILLs; nodes and members killed or removed under writes) for CHAOS_ROUNDS rounds (default 20; make test runs 2)
chaos: venv services image
	CHAOS_ROUNDS=$${CHAOS_ROUNDS:-20} DJANGO_SETTINGS_MODULE=bsn.settings_test $(VENV)/bin/pytest -s \
		tests/integration/test_chaos_workers.py tests/integration/test_chaos_ledger.py
