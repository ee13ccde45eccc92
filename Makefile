# `make test` and `make demo` do their own set-up: Debian's prometheus (and chromium, curl and iproute2 for the tests:
# the distributed test puts master, workers and gateway in network namespaces of their own; nginx and openssl: a
# Prometheus behind a TLS, bearer-token proxy) when missing, then a virtual environment in .venv with this package
# (editable) and the pinned Python packages.
PYTHON ?= python3
VENV ?= .venv
PY = $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test-setup test fast demo stack bench soak lint

APT_INSTALL = apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq

# cargo builds the differential test's Limitador harness (tests/limitador_harness); rustup's default place counts too
export PATH := $(PATH):$(HOME)/.cargo/bin

$(PY):
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || ($(APT_INSTALL) python3-venv && rm -rf $(VENV) && $(PYTHON) -m venv $(VENV))

setup: $(PY)
	@command -v prometheus >/dev/null || ($(APT_INSTALL) prometheus)
	$(PY) -m pip install -q -r requirements.txt -e .

test-setup: setup
	@command -v chromium >/dev/null && command -v curl >/dev/null && command -v ip >/dev/null && \
		(command -v nginx || test -x /usr/sbin/nginx) >/dev/null && command -v openssl >/dev/null || \
		($(APT_INSTALL) chromium curl iproute2 nginx-light openssl)
	@if command -v cargo >/dev/null; then cargo --version; \
		else echo "cargo not found: tests/test_limitador_differential.py (the real Limitador) will be skipped"; fi

test: test-setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

fast: setup
	$(PY) -m pytest tests -m "not e2e" $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/chargeback demo

stack: setup
	$(VENV)/bin/chargeback stack up

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	@command -v wrk >/dev/null && command -v nginx >/dev/null || ($(APT_INSTALL) wrk nginx-light)
	$(PY) bench/gateway_speed.py
	$(PY) bench/ledger_overhead.py
	$(PY) bench/verdict_latency.py
	$(PY) bench/plan_scale.py
	$(PY) bench/verdict_scale.py
	$(PY) bench/webui_scale.py
	$(PY) bench/headers_witness.py

soak: setup  # ten minutes of the stand-in with 10,000 identities at its most, --processes 2 (bench/soak_e2e.py)
	$(PY) bench/soak_e2e.py
