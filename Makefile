# hostlog: `make run` starts the agent on its built-in default, `make test` runs
# the whole suite. Both set up what they need first: Debian packages (when run
# as root on Debian), a virtualenv in .venv, and the project in it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# What the tests run for real: journald and journal-remote, logger, rsyslog
# (with its TLS driver), and what systemd-python compiles against.
APT_PACKAGES := systemd systemd-journal-remote util-linux bsdutils rsyslog rsyslog-gnutls \
                libsystemd-dev pkg-config gcc procps iproute2 openssl \
                lintian rpm dpkg-dev python3 python3-venv python3-dev make binutils adduser nats-server \
                chromium chromium-driver

.PHONY: run test deps venv bench clean faults fuzz lint

run: venv
	@echo "hostlog agent: built-in default (syslog on udp+tcp 127.0.0.1:5514)."
	@echo "  send:  logger --tcp --server 127.0.0.1 --port 5514 hello"
	@echo "  read:  $(BIN)/hostlog query -n 10      (or -f to follow)"
	@echo "  stop:  Ctrl-C"
	$(BIN)/hostlog agent

# Two workers (pytest-xdist), a test file each at a time: most tests wait on
# real daemons and agents, so the suite takes ~40% less wall time; a file's
# module fixtures stay in one worker. TEST_WORKERS=0 runs it in one process.
# The kill -9 files of the fault suite run after, alone: their random kills
# race the agent's retention against the test's reads, which a loaded machine
# would skew; the other fault files (network, disk full, damage, security)
# run on the workers with the rest.
TEST_WORKERS ?= 2
KILL_TESTS := tests/faults/test_kill.py tests/faults/test_archive_kill.py
test: deps venv lint
	$(BIN)/python -m pytest -q -p no:cacheprovider $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(addprefix --ignore=,$(KILL_TESTS)) tests
	$(BIN)/python -m pytest -q -p no:cacheprovider $(KILL_TESTS)

# ruff (lint, import order) and mypy (types; pyproject.toml says which modules)
lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# the fault suite's long version (tests/faults; `make test` runs the short one)
faults: deps venv
	HOSTLOG_FAULTS_LONG=1 $(BIN)/python -m pytest -q -s -p no:cacheprovider tests/faults

# every fuzz harness (tests/fuzz) for FUZZ_SECONDS each, its corpus kept in
# $(FUZZ_DIR)/NAME and any crash saved there; `make test` runs each for seconds
FUZZ_SECONDS ?= 600
FUZZ_DIR ?= .fuzz
FUZZ_HARNESSES := syslog_framing syslog_parse syslog_parse_batch fluent_forward peer_protocol \
                  chunk_codec chunk_lz4 frame_codec config_loader
fuzz: deps venv
	@set -e; for h in $(FUZZ_HARNESSES); do \
	  echo "fuzz $$h ($(FUZZ_SECONDS) s)"; mkdir -p $(FUZZ_DIR)/$$h/corpus; \
	  $(BIN)/python -m tests.fuzz.run $$h --corpus $(FUZZ_DIR)/$$h/corpus --artifacts $(FUZZ_DIR)/$$h \
	    -max_total_time=$(FUZZ_SECONDS); \
	done

deps: $(VENV)/.deps-stamp
$(VENV)/.deps-stamp:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	else \
	  echo "not root on Debian: skipping apt packages ($(APT_PACKAGES))"; \
	fi
	@mkdir -p $(VENV) && touch $@

venv: $(VENV)/.venv-stamp
$(VENV)/.venv-stamp: pyproject.toml setup.py src/hostlog/collectors/syslog/_syslog5424.c src/hostlog/collectors/journald/_journald_read.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# systemd-python needs libsystemd-dev; without it the rest still installs
	$(BIN)/python -m pip install -q -e '.[test,systemd]' || $(BIN)/python -m pip install -q -e '.[test]'
	touch $@

bench: venv
	$(BIN)/python bench/spool_write.py

clean:
	rm -rf $(VENV) build src/*.egg-info

# Installable packages of the current tree, in dist/ (docs/install.md):
# a private virtualenv in /opt/hostlog built with Debian's python3, the unit,
# the config. VERSION_SUFFIX=+1 makes a build that upgrades the previous one.
.PHONY: deb rpm packages
deb:
	packaging/deb/build.sh dist
rpm:
	packaging/rpm/build.sh dist
packages: deb rpm
