# dataone-cn-sslverify — developer entry points. Everything runs with Debian's
# interpreter (/usr/bin/python3): it is what the package runs with on a CN, and
# pyenv's python3 may come first on PATH on build machines.

PYTHON      := /usr/bin/python3
SYSPATH     := /usr/sbin:/usr/bin:/sbin:/bin
VENV        := .venv
# Debian packages the test suite and the demo need (installed only if missing).
APT_TEST    := apache2 curl openssl ca-certificates python3 python3-pytest python3-hypothesis \
               python3-debian python3-venv python3-setuptools
APT_DEMO    := apache2 curl openssl python3
PIP_TEST    := vermin==1.9.2
PYTEST_ARGS ?=

.PHONY: all test unit integration deps deps-demo vermin demo clean

all: test

# Install Debian packages that are missing: `make test` must work on a fresh Debian 12 as root.
deps-demo:
	@PATH=$(SYSPATH) sh scripts/apt-ensure $(APT_DEMO)

deps:
	@PATH=$(SYSPATH) sh scripts/apt-ensure $(APT_TEST)
	@test -x $(VENV)/bin/vermin || { $(PYTHON) -m venv --system-site-packages $(VENV) && \
	  $(VENV)/bin/pip install -q --disable-pip-version-check $(PIP_TEST); }

# The code must run on Python 3.8 .. 3.13 (Ubuntu 20.04 CNs have 3.8).
vermin: deps
	$(VENV)/bin/vermin --no-tips --violations --eval-annotations --backport dataclasses -t=3.8- dataone_cn_sslverify tests scripts/*.py

test: deps vermin
	PATH=$(SYSPATH) $(PYTHON) -m pytest -ra $(PYTEST_ARGS) tests

unit: deps
	$(PYTHON) -m pytest -q tests/unit

integration: deps
	PATH=$(SYSPATH) $(PYTHON) -m pytest -ra tests/integration

# Throwaway Apache with a realistic CN vhost in .demo/: status, the diff, apply, probe, revert.
demo: deps-demo
	PATH=$(SYSPATH) $(PYTHON) scripts/demo.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis .demo
	find . -name __pycache__ -prune -exec rm -rf {} +
