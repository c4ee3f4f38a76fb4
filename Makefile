# Local run and CI plumbing. Every recipe logs to stderr; only `make up` writes to stdout, and only
# its four NAME=value lines, so `make -s up | grep =` reads them cleanly.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
# The targets start servers and processes in a fixed order; running them side by side would race.
.NOTPARALLEL:

PYTHON := $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv

WALLET_API_PORT ?= 8088
WALLET_PG_PORT ?= 54329
WALLET_REDIS_PORT ?= 63799
API_URL ?= http://127.0.0.1:$(WALLET_API_PORT)
DATABASE_URL ?= postgresql+psycopg://wallet@127.0.0.1:$(WALLET_PG_PORT)/wallet
REDIS_URL ?= redis://127.0.0.1:$(WALLET_REDIS_PORT)/0
# Tests get a PostgreSQL and a Redis of their own (ports and folder), whatever DATABASE_URL
# and REDIS_URL say: a `make test` (whose chaos tests restart its servers and whose workers
# flush their Redis) never touches the stack of a `make up` running beside it.
WALLET_TEST_PG_PORT ?= 54339
WALLET_TEST_REDIS_PORT ?= 63809
TEST_RUN_DIR ?= $(CURDIR)/.run/test
TEST_DATABASE_URL ?= postgresql+psycopg://wallet@127.0.0.1:$(WALLET_TEST_PG_PORT)/wallet_test
TEST_REDIS_URL ?= redis://127.0.0.1:$(WALLET_TEST_REDIS_PORT)/1
TEST_SERVICES_ENV = WALLET_RUN_DIR='$(TEST_RUN_DIR)' WALLET_PG_PORT='$(WALLET_TEST_PG_PORT)' \
  WALLET_REDIS_PORT='$(WALLET_TEST_REDIS_PORT)'
TEST_ENV = $(TEST_SERVICES_ENV) DATABASE_URL='$(TEST_DATABASE_URL)' REDIS_URL='$(TEST_REDIS_URL)'
PYTEST_ARGS ?=
# The rest of the environment (TRANSFER_FEE_BPS, BULK_CREDIT_FAIL_USER_IDS, ...) reaches the
# processes unchanged, since make passes its own environment on.
export WALLET_API_PORT WALLET_PG_PORT WALLET_REDIS_PORT API_URL DATABASE_URL REDIS_URL

.PHONY: help venv services test-services migrate up down test demo bench chaos clean

help:
	@echo "make up | down | test | demo | bench | chaos | migrate | services | venv | clean" >&2

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@echo "make: installing requirements.txt into $(VENV) with $(PYTHON)" >&2
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV) >&2
	@$(VENV)/bin/python -m pip install --quiet --upgrade pip >&2
	@$(VENV)/bin/python -m pip install --quiet -r requirements.txt >&2
	@touch $@

services:
	@scripts/services.sh start >&2

test-services:
	@$(TEST_SERVICES_ENV) scripts/services.sh start >&2

migrate: venv services
	@$(VENV)/bin/flask --app api db upgrade >&2

# .flaskenv (git-ignored) lets `flask --app api ...` in this checkout use the stack just started.
up: venv services migrate
	@scripts/processes.sh start
	@printf '%s\n' "# written by make up" "API_URL=$(API_URL)" "DATABASE_URL=$(DATABASE_URL)" \
	  "REDIS_URL=$(REDIS_URL)" > .flaskenv
	@token=$$(scripts/admin_token.sh); \
	  printf '%s\n' "API_URL=$(API_URL)" "DATABASE_URL=$(DATABASE_URL)" "REDIS_URL=$(REDIS_URL)" \
	  "ADMIN_TOKEN=$$token"

down:
	@scripts/processes.sh stop
	@scripts/services.sh stop
	@$(TEST_SERVICES_ENV) scripts/services.sh stop

# pytest exits 5 when it collected no tests; that is a failure here, not a pass.
test: venv test-services
	@scripts/browser.sh >&2
	@scripts/promtool.sh >&2
	@status=0; $(TEST_ENV) $(VENV)/bin/pytest $(PYTEST_ARGS) || status=$$?; \
	  if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	  exit $$status

# The chaos suite starts and kills its own processes, so it needs the servers but not `make up`.
chaos: venv test-services
	@$(TEST_ENV) $(VENV)/bin/pytest tests -m chaos --run-chaos $(PYTEST_ARGS)

demo: venv up
	@ADMIN_TOKEN=$$(cat .run/admin_token) $(VENV)/bin/python -m bench.demo

# The transfer benchmark is specified with a 1.5% fee; `up` restarts the processes with it
# (an explicit TRANSFER_FEE_BPS in the environment wins). BENCH_ARGS=--quick for a short run.
bench: export TRANSFER_FEE_BPS ?= 150
bench: venv up
	@ADMIN_TOKEN=$$(cat .run/admin_token) $(VENV)/bin/python -m bench $(BENCH_ARGS)

# PostgreSQL's data may sit under /tmp when .run is not reachable by its system user
# (see scripts/services.sh); .run/pg-data points at it either way.
clean: down
	@for link in .run/pg-data .run/test/pg-data; do data=$$(readlink -f $$link 2>/dev/null || true); \
	  case "$$data" in /tmp/wallet-pipeline-*/pg) rm -rf "$$(dirname "$$data")" ;; esac; done
	@rm -rf .run
	@echo "make: removed .run" >&2
