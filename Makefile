# `make test` and `make demo` do their own set-up: Debian's prometheus (and chromium and curl for the tests) when missing,
# and the pinned Python packages.
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: setup test-setup test demo stack bench

APT_INSTALL = apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq

setup:
	@command -v prometheus >/dev/null || ($(APT_INSTALL) prometheus)
	$(PYTHON) -m pip install -q -r requirements.txt

test-setup: setup
	@command -v chromium >/dev/null && command -v curl >/dev/null || ($(APT_INSTALL) chromium curl)

test: test-setup
	$(PYTHON) -m pytest tests $(PYTEST_ARGS)

demo: setup
	$(PYTHON) -m chargeback demo

stack: setup
	$(PYTHON) -m chargeback stack up

bench: setup
	@command -v wrk >/dev/null && command -v nginx >/dev/null || ($(APT_INSTALL) wrk nginx-light)
	$(PYTHON) bench/gateway_speed.py
	$(PYTHON) bench/ledger_overhead.py
	$(PYTHON) bench/verdict_latency.py
