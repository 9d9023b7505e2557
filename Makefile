# tc-appliance: `make image` builds the appliance, `make test` runs every test tier.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RECIPE ?= appliance.toml
PIPELINE_ARGS ?=

# Debian packages the pipeline and its tests use (DESIGN.md section 9, DEVELOPERS.md).
APT_PACKAGES := packer qemu-system-x86 qemu-utils squashfs-tools xorriso isolinux \
	syslinux-utils extlinux busybox-static dropbear-bin e2fsprogs containerd runc \
	containernetworking-plugins iptables linux-source-6.1 skopeo docker-registry \
	libxml2-utils shellcheck build-essential bc bison flex libelf-dev kmod fdisk \
	patchelf openssh-client openssh-sftp-server syslinux-common python3-venv cpio curl \
	ca-certificates

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: help deps apt venv image lock test test-fast test-tools test-vm lint clean distclean

help:
	@echo "make image      build the appliance (installs deps, locks if no appliance.lock, builds)"
	@echo "make test       run every test tier: unit, tools and vm (what CI runs)"
	@echo "make test-fast  unit tests only (seconds)"
	@echo "make lint       ruff + shellcheck"
	@echo "make deps       install Debian packages and the Python virtualenv"
	@echo "make clean      remove build/ and out/ (keeps cache/)"
	@echo "make distclean  also remove cache/ and .venv/"

deps: apt venv

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
image: deps
	@if [ -f "$(dir $(RECIPE))appliance.lock" ]; then \
		$(PY) pipeline.py build -c $(RECIPE) --locked $(PIPELINE_ARGS); \
	else \
		$(PY) pipeline.py lock -c $(RECIPE) && $(PY) pipeline.py build -c $(RECIPE) --locked $(PIPELINE_ARGS); \
	fi

lock: deps
	$(PY) pipeline.py lock -c $(RECIPE)

test: deps
	$(PY) -m pytest -m '' tests

test-fast: venv
	$(PY) -m pytest

test-tools: deps
	$(PY) -m pytest -m tools tests

test-vm: deps
	$(PY) -m pytest -m vm tests

lint: venv
	$(PY) -m ruff check appliance tests pipeline.py
	@files=$$(git ls-files 'packer/*.sh' 'packer/scripts/*' 'iso-remaster/*' 'overlays/*' 'tests/standin/*' | \
		while read -r f; do [ -f "$$f" ] && head -1 "$$f" | grep -qE '^#!.*\b(sh|ash)\b' && echo "$$f"; done); \
	if [ -n "$$files" ]; then shellcheck -s sh $$files; else echo "shellcheck: no shell scripts yet"; fi

clean:
	rm -rf build out

distclean: clean
	rm -rf cache $(VENV)
