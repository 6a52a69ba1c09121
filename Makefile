# Thin entry points. `make test` and `make demo` work on a fresh machine:
# they create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-fake test-server test-browser demo bench bench-scale bench-cluster docs lint typecheck clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The tests of stored records, run again with every model in the plain format.
PLAIN_TESTS := $(addprefix tests/functional/test_,api.py queries.py integrity.py errors.py django_api.py \
	roundtrip_properties.py fuzz.py contention.py script_atomicity.py async_scenarios.py order_pushdown.py red_team.py \
	fresh_ids.py cluster.py)

# The query and write tests, run again with every model spread over 4 partitions (scatter and gather).
PARTITION_TESTS := $(addprefix tests/functional/test_,queries.py order_pushdown.py django_api.py integrity.py \
	async_scenarios.py roundtrip_properties.py red_team.py contention.py fresh_ids.py partitions.py unique_claims.py)

test: $(STAMP)  ## run the test suite on a real redis-server, then again in the plain format and over 4 partitions
	$(BIN)/python -m pytest
	REPOCKET_TEST_FORMAT=plain $(BIN)/python -m pytest -q $(PLAIN_TESTS)
	REPOCKET_TEST_PARTITIONS=4 $(BIN)/python -m pytest -q $(PARTITION_TESTS)

test-fake: $(STAMP)  ## the functional tests on fakeredis (no server), and the example shop in both modes
	HYPOTHESIS_MAX_EXAMPLES=20 $(BIN)/python -m pytest tests/functional --repocket-fake -q -p no:cacheprovider \
		--ignore=tests/functional/test_order_pushdown.py --ignore=tests/functional/test_server.py \
		--ignore=tests/functional/test_server_security.py --ignore=tests/functional/test_faults.py \
		--ignore=tests/functional/test_topology.py --ignore=tests/functional/test_tls_acl.py
	cd examples/shop && ../../$(BIN)/python -m pytest -q && ../../$(BIN)/python -m pytest -q --repocket-fake

# The tests whose outcome can depend on the server's version (scripts, storage, streams, expiry,
# the cluster, TLS and ACL users), for a second server: make test-server REDIS_SERVER=/usr/bin/redis-server
SERVER_TESTS := $(addprefix tests/functional/test_,api.py storage_format.py script_atomicity.py integrity.py \
	red_team.py changes.py expiry.py cluster.py tls_acl.py server.py server_security.py errors.py \
	async_connections.py faults.py replication.py unique_claims.py on_delete.py evolution.py atomic.py \
	replicas.py admin.py)
REDIS_SERVER ?= /usr/bin/redis-server

test-server: $(STAMP)  ## the version-sensitive tests (not slow) on another redis-server binary
	REPOCKET_REDIS_SERVER=$(REDIS_SERVER) REPOCKET_REDIS_CLI=$(dir $(REDIS_SERVER))redis-cli HYPOTHESIS_MAX_EXAMPLES=25 \
		$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow" $(SERVER_TESTS)

test-browser: $(STAMP)  ## the admin pages in headless Chromium (REPOCKET_CHROMIUM, default /usr/bin/chromium)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/browser

demo: $(STAMP)  ## run the original repocket tutorial end to end
	$(BIN)/python examples/tutorial.py

bench: $(STAMP)  ## repocket vs two hand-written redis-py programs on one real server
	$(BIN)/python -m benchmarks

bench-scale: $(STAMP)  ## how fixed-size queries grow from 10,000 to 1,000,000 records
	$(BIN)/python -m benchmarks --scale

bench-cluster: $(STAMP)  ## repocket vs a hand-written RedisCluster program on a local 3+3 cluster
	$(BIN)/python -m benchmarks --cluster

docs: $(STAMP)  ## build the Sphinx docs, warnings are errors
	$(BIN)/python -m sphinx -W -n --keep-going -b html docs docs/_build/html

lint: $(STAMP)
	$(BIN)/ruff check repocket tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy repocket

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .hypothesis .mypy_cache .ruff_cache
