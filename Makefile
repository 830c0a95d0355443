# Mesh: two commands on a fresh clone.
#   make run    set up, then run a local 4-node network that mints (Ctrl-C stops it)
#   make test   set up, then check the generated stubs, lint, type-check and run every test
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEV_DIR := .mesh/testnet

.PHONY: setup run test soak chaos proto proto-check lint unit integration e2e bench clean

# First-party plugins (plugins/*/) are packages of their own, installed beside meshd
# exactly as an operator installs a third-party plugin.
PLUGINS := plugins/storage plugins/compute
# The external plugin example in JavaScript (Node 18+, npm): its packages, from the lock file.
JS_EXAMPLE := plugins/examples/js-hash
JS_STAMP := $(JS_EXAMPLE)/node_modules/.installed-stamp
# npm's UnixFS importer, the reference the storage plugin's CIDs are checked against.
UNIXFS_REFERENCE := tests/reference/unixfs
UNIXFS_STAMP := $(UNIXFS_REFERENCE)/node_modules/.installed-stamp

$(STAMP): pyproject.toml constraints.txt $(addsuffix /pyproject.toml,$(PLUGINS))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]' \
		$(addprefix -e ,$(PLUGINS))
	@# mypy: put trio's own (inline-typed) package before trio-typing's old stubs.
	mkdir -p $(VENV)/mypy-path && ln -sfn ../lib/python3.11/site-packages/trio $(VENV)/mypy-path/trio
	touch $@

$(JS_STAMP): $(JS_EXAMPLE)/package.json $(JS_EXAMPLE)/package-lock.json
	@# A machine without Node gets Debian's (the CI image has Node 20 already).
	command -v npm >/dev/null || (apt-get update -q && apt-get install -y -q nodejs npm)
	cd $(JS_EXAMPLE) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(UNIXFS_STAMP): $(UNIXFS_REFERENCE)/package.json $(UNIXFS_REFERENCE)/package-lock.json $(JS_STAMP)
	cd $(UNIXFS_REFERENCE) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(STAMP) $(JS_STAMP) $(UNIXFS_STAMP)
	@# NAT routers of the namespace test bed (meshd/testing/netns.py) need Debian's nftables.
	@command -v nft >/dev/null || (apt-get update -q && apt-get install -y -q nftables)
	@# The unit file's test checks it with systemd-analyze (Debian's systemd).
	@command -v systemd-analyze >/dev/null || (apt-get update -q && apt-get install -y -q systemd)
	@# The dashboard's browser tests drive Debian's chromium with Playwright (no download).
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

run: setup
	@DEV_DIR=$(DEV_DIR) BIN=$(BIN) scripts/dev-run.sh

# Two workers (pytest-xdist): most tests wait on daemons and the network, so
# two at once fit this 2-core machine. The suite takes 15-17 minutes on a
# fresh clone (docs/reliability.md §3; the aim is 8): the slowest tests are
# listed at the end of each run.
TEST_WORKERS ?= 2

test: setup proto-check lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --durations=25 tests

# Every property test (hypothesis) and seeded simulation with 20x the cases and
# random seeds (tests/properties.py). Pin what it finds as an @example.
soak: setup
	MESH_HYPOTHESIS_PROFILE=soak $(BIN)/python -m pytest -p no:cacheprovider \
		-m "hypothesis or seeded" --timeout=3600 tests/unit tests/integration
	@# The REST gateway fuzzed from its OpenAPI document: 1,000-1,600 cases per operation.
	MESH_HYPOTHESIS_PROFILE=soak $(BIN)/python -m pytest -p no:cacheprovider \
		--timeout=3600 tests/e2e/test_http_fuzz.py

# The perturbation campaign (bench/chaos.py, docs/reliability.md): 10 meshd
# processes in network namespaces (root), random faults for CHAOS_SECONDS.
CHAOS_SECONDS ?= 300
CHAOS_ARGS ?=
chaos: setup
	$(BIN)/python bench/chaos.py --duration $(CHAOS_SECONDS) $(CHAOS_ARGS)

unit: setup
	$(BIN)/python -m pytest tests/unit

integration: setup
	$(BIN)/python -m pytest tests/integration

e2e: setup
	$(BIN)/python -m pytest tests/e2e

proto: setup
	$(BIN)/python scripts/gen_proto.py

proto-check: setup
	$(BIN)/python scripts/gen_proto.py --check

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	@# The layering contracts of pyproject.toml [tool.importlinter] (docs/architecture.md).
	$(BIN)/lint-imports --no-cache

bench: setup  # one after the other: never two benchmarks at once on 2 cores
	$(BIN)/python bench/grpc_bridge.py
	$(BIN)/python bench/cold_start.py
	$(BIN)/python bench/p2p_stream.py
	$(BIN)/python bench/gossip.py
	$(BIN)/python bench/dht.py
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/ledger_partition.py
	$(BIN)/python bench/ledger_soak.py
	$(BIN)/python bench/tasks.py
	$(BIN)/python bench/testnet.py
	$(BIN)/python bench/http_gateway.py
	$(BIN)/python bench/dashboard.py
	$(BIN)/python bench/storage_coding.py
	$(BIN)/python bench/storage.py
	$(BIN)/python bench/market.py

clean:
	rm -rf $(VENV) .mesh .pytest_cache .mypy_cache .ruff_cache
