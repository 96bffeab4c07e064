# dataone-cn-sslverify — developer entry points. Everything runs with Debian's
# interpreter (/usr/bin/python3): it is what the package runs with on a CN, and
# pyenv's python3 may come first on PATH on build machines.

PYTHON      := /usr/bin/python3
SYSPATH     := /usr/sbin:/usr/bin:/sbin:/bin
VENV        := .venv
# Debian packages the test suite and the demo need (installed only if missing).
APT_TEST    := apache2 curl openssl ca-certificates python3 python3-pytest python3-hypothesis \
               python3-debian python3-venv python3-setuptools pybuild-plugin-pyproject git \
               python3-requests default-jdk-headless golang-go patch e2fsprogs python3-pyflakes \
               chromium firefox-esr libnss3-tools \
               reprepro gnupg devscripts python3-yaml
# (the last three are real clients for tests/integration/test_matrix.py: python-requests, OpenJDK
#  HttpClient and Go net/http checked against their probe profiles; ~15 s to install golang-go;
#  chromium, firefox-esr and libnss3-tools (certutil) are the real browsers of
#  tests/integration/test_browsers.py, `make browsers` runs only those;
#  reprepro, gnupg and devscripts (debsign) make and sign the apt repositories of `make release`
#  and of the lifecycle tests; python3-yaml reads .github/workflows/ci.yml in test_release.py)
APT_DEMO    := apache2 curl openssl python3
PIP_TEST    := vermin==1.9.2
PYTEST_ARGS ?=
# The lowest supported interpreter (Ubuntu 18.04's is 3.6.9): pyenv's CPython 3.6, a venv with the
# last pytest/hypothesis releases for 3.6 from PyPI. `make test-py36` runs the unit suite and the
# real-Apache tests of status, diff, apply, revert and probe with it (the CLI runs under 3.6 too).
PY36        ?= /root/.pyenv/versions/3.6.15/bin/python3.6
VENV36      := .venv36
PIP_PY36    := pytest==7.0.1 hypothesis==6.31.6
PY36_TESTS  := tests/unit tests/integration/test_status_diff.py tests/integration/test_transaction.py \
               tests/integration/test_probe.py

.PHONY: all test unit integration browsers deps deps-demo vermin lint demo clean test-py36 venv36

all: test

# Install Debian packages that are missing: `make test` must work on a fresh Debian 12 as root.
deps-demo:
	@PATH=$(SYSPATH) sh scripts/apt-ensure $(APT_DEMO)

deps:
	@PATH=$(SYSPATH) sh scripts/apt-ensure $(APT_TEST)
	@test -x $(VENV)/bin/vermin || { $(PYTHON) -m venv --system-site-packages $(VENV) && \
	  $(VENV)/bin/pip install -q --disable-pip-version-check $(PIP_TEST); }

# The code must run on Python 3.6 .. 3.13 (Ubuntu 18.04 CNs have 3.6), with no backport package.
vermin: deps
	$(VENV)/bin/vermin --no-tips --violations --eval-annotations -t=3.6- dataone_cn_sslverify tests scripts/*.py dataone-cn-sslverify-from-clone

# Unused imports and names, undefined names (pyflakes: no style opinions).
lint: deps
	$(PYTHON) -m pyflakes dataone_cn_sslverify tests bench scripts/*.py dataone-cn-sslverify-from-clone

test: deps vermin lint
	PATH=$(SYSPATH) $(PYTHON) -m pytest -ra $(PYTEST_ARGS) tests
	@$(MAKE) --no-print-directory test-py36

venv36:
	@test -x $(PY36) || { echo "Python 3.6 not found at $(PY36): install it with pyenv" \
	  "(pyenv install 3.6.15) or run make with PY36=/path/to/python3.6" >&2; exit 1; }
	@$(PY36) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 6))' || \
	  { echo "$(PY36) is not Python 3.6" >&2; exit 1; }
	@test -x $(VENV36)/bin/pytest || { $(PY36) -m venv $(VENV36) && \
	  $(VENV36)/bin/pip install -q --disable-pip-version-check pip==21.3.1 && \
	  $(VENV36)/bin/pip install -q --disable-pip-version-check $(PIP_PY36); }

test-py36: deps venv36
	PATH=$(SYSPATH) $(VENV36)/bin/python -m pytest -ra -p no:cacheprovider $(PYTEST_ARGS) $(PY36_TESTS)

unit: deps
	$(PYTHON) -m pytest -q tests/unit

integration: deps
	PATH=$(SYSPATH) $(PYTHON) -m pytest -ra tests/integration

# Real Chromium and Firefox ESR (headless) against the harness CN: the MetacatUI CORS call (docs/browsers.md).
browsers: deps
	PATH=$(SYSPATH) $(PYTHON) -m pytest -ra -m browser $(PYTEST_ARGS) tests/integration/test_browsers.py

# Throwaway Apache with a realistic CN vhost in .demo/: status, the diff, apply, probe, revert.
demo: deps-demo
	PATH=$(SYSPATH) $(PYTHON) scripts/demo.py

# Rewrite the README's sample runs (<!-- sample: NAME --> blocks) from the real command
# against a throwaway Apache; tests/integration/test_readme.py fails while they are stale.
.PHONY: readme-samples
readme-samples: deps-demo
	PATH=$(SYSPATH) $(PYTHON) tests/harness/readme_samples.py

clean:
	rm -rf $(VENV) $(VENV36) build dist *.egg-info .pytest_cache .hypothesis .demo deb_dist dataone-cn-sslverify-*.tar.gz
	find . -name __pycache__ -prune -exec rm -rf {} +

# --- Debian package ---------------------------------------------------------
# `make deb`: dist/dataone-cn-sslverify_VERSION_all.deb from debian/ (the source
# of truth) with dpkg-buildpackage, in a temp copy of the tree, with Debian's
# interpreter; also the .dsc and tarballs, .buildinfo, .changes and a .sha256
# per file. Reproducible: SOURCE_DATE_EPOCH defaults to debian/changelog's date.
# `make deb-stdeb`: the same package through `setup.py bdist_deb` (stdeb), in
# dist/stdeb/ (tests/package/test_build.py checks that they are equivalent).
# `make lintian`: lintian --pedantic on the .deb and the source; fails on any
# error, warning or pedantic tag that debian/*lintian-overrides does not justify.
.PHONY: deb deb-stdeb lintian

deb:
	PATH=$(SYSPATH) sh scripts/build-deb --out dist

deb-stdeb:
	PATH=$(SYSPATH) sh scripts/build-stdeb --out dist/stdeb

lintian: deb
	PATH=$(SYSPATH) sh scripts/run-lintian dist/dataone-cn-sslverify_*.changes

# Benchmarks, not part of `make test`: downtime under load against the CN package's stop/start,
# overhead against the bare Apache floor, growth with config size. Rewrites bench/RESULTS.md
# (raw figures in bench/results.json); `python3 bench/run.py --quick` is a fast smoke run.
APT_BENCH   := apache2 openssl python3 time
.PHONY: bench
bench:
	@PATH=$(SYSPATH) sh scripts/apt-ensure $(APT_BENCH)
	PATH=$(SYSPATH) $(PYTHON) bench/run.py

# --- Package lifecycle in a Debian chroot (tests/package/chroot.py) ----------
# A cached debootstrap chroot (Debian 12 minbase + apache2, python3, curl,
# openssl, ca-certificates) in /var/tmp/dataone-cn-sslverify-chroot-cache,
# built on first use (~1 min; `scripts/make-chroot` builds it ahead).
# `make lifecycle`: only the lifecycle tests (they also run in `make test`):
# install/upgrade/remove/purge with apt, dataone-cn-os-core's trigger, live checks.
# `make piuparts`: piuparts on dist/'s .deb (install+purge, install-remove-install,
# upgrade to self), log in dist/piuparts.log; needs the Debian mirror.
# `make demo-deb`: builds the .deb and shows it at work in a throwaway chroot:
# install, status, probe, remove. `make demo` runs it too.
APT_CHROOT  := debootstrap dpkg-dev curl
DEB_FILE     = dist/dataone-cn-sslverify_$(shell dpkg-parsechangelog -SVersion)_all.deb
.PHONY: lifecycle piuparts demo-deb

lifecycle: deps
	@PATH=$(SYSPATH) sh scripts/apt-ensure $(APT_CHROOT)
	PATH=$(SYSPATH) $(PYTHON) -m pytest -ra --durations=0 -m lifecycle $(PYTEST_ARGS) tests/package/test_lifecycle.py

piuparts: deb
	@PATH=$(SYSPATH) sh scripts/apt-ensure piuparts $(APT_CHROOT)
	PATH=$(SYSPATH) sh scripts/run-piuparts $(DEB_FILE)

demo-deb: deb
	@PATH=$(SYSPATH) sh scripts/apt-ensure $(APT_CHROOT)
	PATH=$(SYSPATH) $(PYTHON) scripts/demo-deb.py $(DEB_FILE)

demo: demo-deb

# --- Fleet rollout with Ansible (deploy/ansible/) ------------------------------
# `make test-fleet`: the rollout/rollback playbooks against three chroot CN hosts
# (tests/package/test_fleet.py, ~1 min once the chroot cache exists). Needs Debian's
# `ansible` package (community.general's chroot connection; never Galaxy). `make test`
# runs it too (it is in tests/); deselect there with PYTEST_ARGS="-m 'not fleet'".
.PHONY: test-fleet
test-fleet: deps
	@PATH=$(SYSPATH) sh scripts/apt-ensure $(APT_CHROOT) ansible
	PATH=$(SYSPATH) $(PYTHON) -m pytest -ra --durations=0 -m fleet $(PYTEST_ARGS) tests/package/test_fleet.py

# --- Release: a signed apt repository in dist/apt/ (docs/release.md) ----------
# `make release`: refuses unless the tree is clean, debian/changelog's entry is
# released and a tag (RELEASE_TAG or the v* tag on HEAD) names its version; then
# the `make deb` build, lintian, debsign (.changes, .dsc, .buildinfo), reprepro
# (bookworm, trixie: signed InRelease/Release.gpg, the keyring), the package
# tests on exactly those artifacts, and only then dist/apt/. The key:
# RELEASE_KEY (a key id, or an armoured secret key file); unset, a throwaway key.
# `make release-check`: only the refusal checks (seconds). `make demo-repo`: a
# throwaway chroot "CN" installs from dist/apt/ over HTTP with Signed-By.
APT_RELEASE := reprepro gnupg devscripts lintian
.PHONY: release release-check demo-repo
release: deps
	@PATH=$(SYSPATH) sh scripts/apt-ensure $(APT_RELEASE) $(APT_CHROOT)
	PATH=$(SYSPATH) sh scripts/release

release-check: deps
	PATH=$(SYSPATH) sh scripts/release --check

demo-repo:
	@PATH=$(SYSPATH) sh scripts/apt-ensure $(APT_CHROOT)
	PATH=$(SYSPATH) $(PYTHON) scripts/demo-apt-repo.py dist/apt $(or $(SUITE),bookworm)
