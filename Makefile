# tc-appliance: `make image` builds the appliance, `make test` runs every test tier.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RECIPE ?= appliance.toml
PIPELINE_ARGS ?=
INSTALL_MODE ?= traditional

# Debian/Ubuntu packages (docs/architecture.md#tests): what `make image` needs, and
# what the tests and the offline stand-in need on top (linux-source-6.1 and the stand-in's
# Debian binaries are Debian 12's; an image build on Ubuntu does not ask for them).
# gcc-11: the kernel stage builds a tree whose objtool GCC >= 12 rejects (tc11's 5.4.3) with it.
IMAGE_PACKAGES := packer qemu-system-x86 qemu-utils squashfs-tools xorriso skopeo gcc-11 \
	build-essential bc bison flex libelf-dev kmod cpio openssh-client python3-venv curl \
	ca-certificates
TEST_PACKAGES := isolinux syslinux-utils extlinux syslinux-common busybox-static acpid dropbear-bin \
	e2fsprogs containerd runc containernetworking-plugins iptables linux-source-6.1 \
	docker-registry libxml2-utils shellcheck fdisk patchelf openssh-sftp-server strace
APT_PACKAGES := $(IMAGE_PACKAGES) $(TEST_PACKAGES)

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: help deps image-deps apt venv image demo bench lock test test-fast test-tools test-vm lint clean distclean

help:
	@echo "make image      build the appliance (installs deps, locks if no appliance.lock, builds)"
	@echo "make demo       the whole pipeline offline on the stand-in (INSTALL_MODE=frugal too)"
	@echo "make bench      cold + no-op build, remaster vs xorriso, sizes, boot-to-ready vs bare boot (tables)"
	@echo "make test       run every test tier: unit, tools and vm (what CI runs)"
	@echo "make test-fast  unit tests only (seconds)"
	@echo "make lint       ruff, shellcheck, the applet lint (tc11 commands only), actionlint and zizmor"
	@echo "make deps       install Debian packages and the Python virtualenv"
	@echo "make clean      remove build/ and out/ (keeps cache/)"
	@echo "make distclean  also remove cache/ and .venv/"

deps: apt venv

# `make image` installs only what an image build needs.
image-deps:
	@$(MAKE) --no-print-directory apt APT_PACKAGES="$(IMAGE_PACKAGES)"
	@$(MAKE) --no-print-directory venv

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# With a committed lock the build is --locked; without one it locks first, printing every
# pin it trusted and the checksum file it came from.
image: image-deps
	@if [ -f "$(dir $(RECIPE))appliance.lock" ]; then \
		$(PY) pipeline.py build -c $(RECIPE) --locked $(PIPELINE_ARGS); \
	else \
		$(PY) pipeline.py lock -c $(RECIPE) && $(PY) pipeline.py build -c $(RECIPE) --locked $(PIPELINE_ARGS); \
	fi

# The same pipeline on the offline stand-in for Tiny Core 11 (tests/standin/), which it
# builds (cached) and serves on 127.0.0.1 for the duration of the build.
demo: deps
	$(PY) -m tests.standin.demo --mode $(INSTALL_MODE) $(PIPELINE_ARGS)

# Benchmarks (never timed tests): a cold and a no-op build on the stand-in in build/bench/,
# remaster vs xorriso, sizes, boot-to-ready against a bare boot and the boot timeline, for both
# install modes (the frugal one built for its boot rows only); prints tables, also in
# build/bench/bench.md (`python -m tests.standin.bench --update-readme` rewrites README's).
bench: deps
	$(PY) -m tests.standin.bench $(PIPELINE_ARGS)

lock: image-deps
	$(PY) pipeline.py lock -c $(RECIPE)

# The junit XML is for `make bench` (the last run's wall time); build/ is git-ignored.
test: deps
	$(PY) -m pytest -m '' tests --junitxml=build/test-results.xml

test-fast: venv
	$(PY) -m pytest

test-tools: deps
	$(PY) -m pytest -m tools tests

test-vm: deps
	$(PY) -m pytest -m vm tests

lint: venv
	$(PY) -m ruff check appliance tests pipeline.py
	$(PY) -m tests.applet_lint
	@files=$$(git ls-files 'packer/*.sh' 'packer/scripts/*' 'iso-remaster/*' 'overlays/*' 'tests/standin/*' | \
		while read -r f; do [ -f "$$f" ] && head -1 "$$f" | grep -qE '^#!.*\b(sh|ash)\b' && echo "$$f"; done); \
	if [ -n "$$files" ]; then shellcheck -s sh $$files; else echo "shellcheck: no shell scripts yet"; fi
	$(VENV)/bin/actionlint .github/workflows/*.yml
	$(VENV)/bin/zizmor --offline --persona=pedantic --no-progress .github/workflows/

clean:
	rm -rf build out

distclean: clean
	rm -rf cache $(VENV)
