# hoopgate developer targets (GNU make). See README.md.
#
#   make setup   Debian packages (as root, only when missing) and the .venv
#   make test    unit + integration tests against real servers on loopback
#   make unit    unit tests only, no servers
#   make check   formatting, lint, strict typing, import contracts, marks
#   make demo    servers + hoopgate in front of them; writes demo/env
#   make bench   side-by-side benchmarks into bench/results/ (QUICK=1: a smoke run)
#
# Extra pytest arguments: make test PYTEST_ARGS='-k services -x'

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

VENV ?= .venv
PY := $(VENV)/bin/python
# The interpreter that creates the venv.
PYTHON ?= python3
PYTEST_ARGS ?=

# What the test servers, the demo and the benchmarks need from Debian.
DEB_PACKAGES := openssl curl postgresql postgresql-contrib redis-server slapd \
	ldap-utils openssh-server pgbouncer ca-certificates rsync

STAMP := $(VENV)/.hoopgate-setup
# Holds the symlink hoopgate_plugins -> plugins/ (see the $(STAMP) recipe).
LINKS := $(abspath $(VENV))/hoopgate-src

.PHONY: setup deb-packages test unit check demo bench

setup: deb-packages $(STAMP)

# Fast when everything is present (dpkg -s only); installs what is missing
# when run as root. python3-venv is needed only where Debian's python3 lacks
# ensurepip and no venv exists yet.
deb-packages:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg -s "$$p" >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	if [ ! -x "$(PY)" ]; then \
	  command -v $(PYTHON) >/dev/null || missing="$$missing python3"; \
	  $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "make setup: missing Debian packages:$$missing (run make setup as root)" >&2; \
	  else \
	    echo "make setup: installing$$missing"; \
	    apt-get update -q; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  fi; \
	fi

# The editable install. `pip install -e . --config-settings editable_mode=compat`
# only puts the project root on sys.path: that finds hoopgate/ and the twistd
# dropin twisted/plugins/, but never `hoopgate_plugins`, which setup.cfg maps
# from plugins/ with package_dir (the import name differs from the folder).
# A default editable install cannot map it either while setup.cfg discovers
# packages with find_namespace: (it finds `plugins`, not `hoopgate_plugins`),
# and its import-hook finder hides twisted/plugins/ from Twisted's plugin scan.
# So: a default editable install (dependencies, console scripts), plus our own
# hoopgate-dev.pth in site-packages naming
#   - the project root: Twisted scans <entry>/twisted/plugins of every sys.path
#     entry, so `twistd hoopgate` works from any directory;
#   - $(LINKS), a folder holding the symlink hoopgate_plugins -> plugins/,
#     which makes `import hoopgate_plugins` load the files in plugins/ (mypy
#     and lint-imports find it there too).
# Both checks at the end run from / so the current directory cannot help.
$(STAMP): setup.cfg pyproject.toml
	@if [ ! -x "$(PY)" ]; then \
	  $(PYTHON) -m venv $(VENV); \
	  $(PY) -m pip install -q -U pip; \
	fi
	$(PY) -m pip install -q -e '.[dev]'
	@mkdir -p $(LINKS)
	@ln -sfn $(CURDIR)/plugins $(LINKS)/hoopgate_plugins
	@site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))'); \
	printf '%s\n' "$(CURDIR)" "$(LINKS)" > "$$site/hoopgate-dev.pth"
	@cd / && $(abspath $(PY)) -c 'import hoopgate, hoopgate_plugins'
	@cd / && $(abspath $(PY)) -c 'from twisted.plugin import getPlugins; \
	from twisted.application.service import IServiceMaker; \
	names = [p.tapname for p in getPlugins(IServiceMaker)]; \
	assert "hoopgate" in names, f"twistd plugin hoopgate not found: {names}"'
	@touch $@

# One shell: start the servers in a fresh run directory, always stop them
# (EXIT trap; INT/TERM exit through it), run pytest with the servers' env.
# HOOPGATE_REQUIRE_SERVERS=1: a missing server fails a test, never skips it.
test: setup
	@export HG_RUN=$$(mktemp -d /tmp/hoopgate-it.XXXXXX); \
	trap 'tests/services.sh stop' EXIT; \
	trap 'exit 130' INT TERM; \
	tests/services.sh start; \
	set -a; . "$$HG_RUN/env"; set +a; \
	HOOPGATE_REQUIRE_SERVERS=1 $(PY) -m pytest -q tests $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

# Runs every check even when an earlier one fails, then lists the failures.
# mypy takes packages (-p) or files, never both: the dropin gets its own run.
check: setup
	@failed=""; \
	run() { echo "== $$*"; "$$@" || failed="$$failed"$$'\n'"  $$*"; }; \
	run $(VENV)/bin/ruff format --check . ; \
	run $(VENV)/bin/ruff check . ; \
	run env MYPYPATH=$(LINKS) $(VENV)/bin/mypy -p hoopgate -p hoopgate_plugins -p tests ; \
	run $(VENV)/bin/mypy twisted/plugins ; \
	run $(VENV)/bin/lint-imports ; \
	run scripts/check-marks.sh ; \
	if [ -n "$$failed" ]; then echo "make check: failed:$$failed" >&2; exit 1; fi; \
	echo "make check: all passed"

demo: setup
	scripts/demo.sh

# Benchmarks (never part of `make test`): its own servers, PgBouncer and
# hoopgate; results in bench/results/ (see docs/performance.md). The `bench`
# extra of setup.cfg (matplotlib, py-spy) goes into the venv when missing,
# without reinstalling the project. QUICK=1: a short smoke run.
QUICK ?=
bench: setup
	@if ! $(PY) -c 'import matplotlib' 2>/dev/null || [ ! -x $(VENV)/bin/py-spy ]; then \
	  extra=$$($(PY) -c 'import configparser; c = configparser.ConfigParser(); \
	    c.read("setup.cfg"); print(c["options.extras_require"]["bench"])'); \
	  echo "make bench: installing" $$extra; \
	  $(PY) -m pip install -q $$extra; \
	fi
	$(PY) -m bench.run $(if $(filter 1 yes true,$(QUICK)),--quick)
