# compute-driver developer/CI entry points.  See `make help`.
#
# Targets that touch the host (install packages, start daemons, write under
# /var/lib/compute-driver) must run as root: venv services test-guest test demo.

VENV ?= $(CURDIR)/.venv
export VENV

GUEST_DIR := /var/lib/compute-driver/test-guest

# The neutral modules and the RPC layer are type-checked with --strict (issue 14:
# grow this list package by package).
STRICT_PATHS := compute_driver/exception.py compute_driver/states.py compute_driver/objects.py \
	compute_driver/wire_schemas.py compute_driver/client.py compute_driver/virt/base.py \
	compute_driver/virt/libvirt/guest_config.py \
	compute_driver/guest_properties.py compute_driver/disk_image compute_driver/domain_xml compute_driver/rpc \
	network_plugins/base.py storage_backends/base.py

ROOT_TARGETS := venv services test-guest test demo

# Prerequisites (venv -> services -> test-guest) must run in order, also under -j.
.NOTPARALLEL:

.PHONY: help venv services test-guest unit functional test demo genconfig lint lint-mypy clean

ifneq ($(filter $(ROOT_TARGETS),$(MAKECMDGOALS)),)
ifneq ($(shell id -u),0)
$(error make $(filter $(ROOT_TARGETS),$(MAKECMDGOALS)): must run as root (installs packages, starts libvirtd/RabbitMQ/OVS, writes /var/lib/compute-driver); try: sudo make $(MAKECMDGOALS))
endif
endif

# Fail with a hint instead of "No such file or directory" when the venv is missing.
define need-venv
@test -x "$(VENV)/bin/python" || { echo "$(VENV) does not exist; run 'sudo make venv' first" >&2; exit 1; }
endef

help:
	@echo "make venv        install Debian packages + $(VENV) (tools/install-deps.sh; root)"
	@echo "make services    start virtlogd, libvirtd, RabbitMQ, Open vSwitch if not running (root)"
	@echo "make test-guest  build the tiny test guest into $(GUEST_DIR) (root)"
	@echo "make unit        run unit tests"
	@echo "make functional  run functional tests"
	@echo "make test        venv + services + test-guest, then tools/run-tests.sh (root; what CI runs)"
	@echo "make demo        venv + services + test-guest, then tools/demo.sh (root)"
	@echo "make genconfig   generate the sample config with oslo-config-generator"
	@echo "make lint        ruff check + ruff format --check + mypy (--strict on the neutral modules and rpc) + lint-imports (layer contracts in setup.cfg)"
	@echo "make clean       remove $(VENV) and caches (no system state)"

venv:
	tools/install-deps.sh

services:
	tools/start-services.sh

test-guest:
	tools/build-test-guest.sh $(GUEST_DIR)

unit:
	$(need-venv)
	$(VENV)/bin/pytest tests/unit

functional:
	$(need-venv)
	$(VENV)/bin/pytest tests/functional

test: venv services test-guest lint
	tools/run-tests.sh

demo: venv services test-guest
	tools/demo.sh

genconfig:
	$(need-venv)
	$(VENV)/bin/oslo-config-generator --config-file etc/compute-driver/config-generator.conf

lint: lint-mypy
	$(need-venv)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# Also the pre-commit hook's (.pre-commit-config.yaml).
lint-mypy:
	$(need-venv)
	$(VENV)/bin/mypy compute_driver network_plugins storage_backends
	$(VENV)/bin/mypy --strict $(STRICT_PATHS)

clean:
	rm -rf -- "$(VENV)" .pytest_cache .ruff_cache .mypy_cache .hypothesis .tox build dist
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -prune -exec rm -rf {} +
	find . -path ./.git -prune -o -name '*.py[co]' -type f -exec rm -f {} +
