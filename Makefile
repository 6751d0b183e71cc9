# artroute — two commands matter: `make demo` and `make test`. Both bootstrap .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.artroute-installed
PYTEST_ARGS ?=
ARGS ?=

.PHONY: venv tools test demo bench stack clean help

help:
	@echo "make demo   - start the embedded stack, serve a model, upload artworks, print the routing decisions"
	@echo "              and the ledger's counts beside Kafka's (make demo ARGS=--keep: keep it all running)"
	@echo "make test   - run the test suite against real servers"
	@echo "make bench  - run the streaming, fault and trainer benchmarks (JSON under runs/bench/)"
	@echo "make stack  - run the embedded stack in the foreground (Ctrl-C stops it)"

venv: $(STAMP) tools

# System tools the deploy tests render with (tests/deploy/test_render.py): Debian's docker-compose for
# `compose config`. Installed with apt when missing and running as root (CI); otherwise that test skips.
# kubectl or kustomize renders the kustomize overlays (Debian's kubernetes-client is too old for them).
tools:
	@command -v docker-compose >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null; }; }; } || \
	  echo "note: docker-compose is not installed; tests/deploy/test_render.py will skip its compose test"

# Re-installs only when the dependency pins change; a no-op otherwise.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[stack,test]'
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m streams demo $(ARGS)

bench: $(STAMP)
	$(PY) -m streams bench --out runs/bench/streams.json
	$(PY) -m streams bench faults --out runs/bench/faults.json
	$(PY) -m trainer bench train --out runs/bench/train.json
	$(PY) -m trainer bench harvest --out runs/bench/harvest.json

stack: $(STAMP)
	$(PY) -m streams stack up

clean:
	rm -rf $(VENV) .artroute runs .pytest_cache
