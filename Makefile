# lambdagraph — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
# pytest workers: the suite is I/O bound on moto; two cores on CI.
PYTEST_WORKERS ?= auto

.PHONY: install run test crashpoints lint bench synth deploy destroy clean aws-calls

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m infra.local

# node_modules: the CDK CLI pinned in package.json, which a test runs against the template.
test: install node_modules/.package-lock.json
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup

# IAM coverage (tests/aws_calls.py): rerun the suite recording every AWS call each function
# makes and rewrite tests/infra/aws_calls.json, which the template is checked against.
aws-calls: install
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup --aws-calls-update

# Only the crash points of the run path (tests/crashpoints, part of `make test`; ~2 min on
# 2 cores). `python -m bench crashpoints` replays every point on its own, more scenarios.
crashpoints: install
	$(BIN)/pytest -n $(PYTEST_WORKERS) tests/crashpoints

lint: install
	$(BIN)/ruff check functions graphs infra tests bench
	$(BIN)/ruff format --check functions graphs infra tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

# --- AWS (docs/deploy.md) ------------------------------------------------------------------
# The CDK CLI is pinned to v2 in package.json (npm's latest tag is 3.x); `npm ci` installs it.
CDK := npx --no-install cdk
# Deployment parameters, passed as CDK context: make deploy TTL_DAYS=7 ALARM_EMAIL=ops@example.com
TTL_DAYS ?= 30
LOG_LEVEL ?= INFO
ALARM_EMAIL ?=
RETAIN_DATA ?= true
STACK_NAME ?= LambdaGraph
# Origins whose pages may call the API (CORS), comma-separated; * for any.
CORS_ORIGINS ?=
CDK_CONTEXT = -c ttlDays=$(TTL_DAYS) -c logLevel=$(LOG_LEVEL) -c retainData=$(RETAIN_DATA) \
	-c stackName=$(STACK_NAME) $(if $(ALARM_EMAIL),-c alarmEmail=$(ALARM_EMAIL)) \
	$(if $(CORS_ORIGINS),-c corsOrigins=$(CORS_ORIGINS))

node_modules/.package-lock.json: package.json package-lock.json
	@node -e 'process.exit(+process.versions.node.split(".")[0] < 22)' || \
		echo "WARNING: Node.js $$(node --version) is end of life for jsii/CDK: use Node.js 22 or 24" >&2
	npm ci --no-audit --no-fund
	touch $@

# Builds the code asset (.build/asset: pip for manylinux2014_aarch64, no docker), runs cdk-nag
# during synthesis (a finding fails it), then lints the template (errors fail, warnings show).
synth: install node_modules/.package-lock.json
	$(BIN)/python -m infra.bundling
	rm -rf cdk.out
	$(CDK) synth --quiet $(CDK_CONTEXT)
	$(BIN)/cfn-lint --non-zero-exit-code error cdk.out/$(STACK_NAME).template.json

# `cdk bootstrap` is idempotent: the first deploy into an account/region sets up CDK's asset
# bucket and roles, later ones find them in place.
CDK_DEPLOY_FLAGS ?= --require-approval never
deploy: synth
	$(CDK) bootstrap --app cdk.out
	$(CDK) deploy --app cdk.out $(CDK_DEPLOY_FLAGS) $(STACK_NAME)

destroy: install node_modules/.package-lock.json
	$(CDK) destroy --force $(CDK_CONTEXT) $(STACK_NAME)

clean:
	rm -rf $(VENV) cdk.out .pytest_cache .mypy_cache .ruff_cache
