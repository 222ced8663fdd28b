# The two commands of the README: `make demo` and `make test` (both set up .venv first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck venv bench clean system-deps mcpb mcp-app conformance node-tools

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Tools the tests need from the system, installed only when missing: systemd-analyze (unit
# files), Debian's chromium (the browser tests drive it with Playwright; no browser is
# ever downloaded by Playwright itself) and Debian's postgresql (the shared-store tests start
# their own server in a temporary folder; nothing is enabled or started system-wide).
system-deps:
	@missing=""; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note: not installed:$$missing; the tests that need them are skipped (outside CI)"; fi; \
	fi

demo: $(STAMP)
	$(BIN)/bygheartd demo

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict bygheartd

test: $(STAMP) system-deps node-tools lint typecheck
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# Tools from the npm registry that some tests run (never fetched by the tests themselves):
# Node 22 (the `node@22` package), the MCP conformance suite and the MCPB validator, pinned,
# into build/node-tools once. Without npm, or when the registry cannot be reached, those tests
# say so and are skipped.
NODE_TOOLS := build/node-tools
node-tools:
	@if [ -x $(NODE_TOOLS)/node_modules/.bin/conformance ] && [ -x $(NODE_TOOLS)/node_modules/.bin/mcpb ]; then :; \
	elif command -v npm >/dev/null 2>&1; then \
	  mkdir -p $(NODE_TOOLS) && cd $(NODE_TOOLS) && \
	  npm install --no-save --no-fund --no-audit --loglevel=error \
	    node@22.23.3 @modelcontextprotocol/conformance@0.1.16 @anthropic-ai/mcpb@2.1.2 >/dev/null \
	  || echo "note: could not install the npm test tools; the conformance and bundle tests are skipped"; \
	else echo "note: npm is missing; the conformance and bundle-validation tests are skipped"; fi

bench: $(STAMP)
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/store.py
	$(BIN)/python bench/watcher.py
	$(BIN)/python bench/web.py
	$(BIN)/python bench/pool.py
	$(BIN)/python bench/store_lock.py
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/shared_store.py
	$(BIN)/python bench/submit.py

# The MCP Bundle: mcpb/ plus bygheartd's own wheel beside the launcher (so the .mcpb file
# alone installs it: the launcher runs the wheel with uvx, or in a venv of its own), checked
# against the MCPB schema, then packed by the official tool (npm registry needed once).
# Installs with a double click in Claude Desktop.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
MCPB := npx -y @anthropic-ai/mcpb

mcpb: $(STAMP)
	$(MCPB) validate mcpb/manifest.json
	rm -rf build/mcpb build/mcpb-wheel build/lib build/bdist.*  # no stale files in the wheel
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation -w build/mcpb-wheel .
	cp -R mcpb build/mcpb
	cp build/mcpb-wheel/bygheartd-$(VERSION)-*.whl build/mcpb/server/
	mkdir -p dist
	rm -f dist/bygheartd-$(VERSION).mcpb
	$(MCPB) pack build/mcpb dist/bygheartd-$(VERSION).mcpb

# The song view MCP Apps hosts show inline (mcp-app/src -> bygheartd/mcp/ui/song.html, one
# self-contained file, committed), and the browser tests' host (mcp-app/test-host/host.js ->
# host.bundle.js, committed). Only needed after changing either source: installing and
# testing bygheartd never build it. Versions are fixed by mcp-app/package-lock.json.
mcp-app:
	cd mcp-app && npm ci && npm run build && npm run build:host

# The official MCP conformance suite against our server (tests/test_mcp_conformance.py, part
# of `make test` too). It needs Node 22, which the `node@22` npm package carries; both land in
# build/node-tools once (npm registry needed then).
conformance: $(STAMP) node-tools
	$(BIN)/python -m pytest -q -n 0 tests/test_mcp_conformance.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache bygheartd-demo
