# The Lambda packages. `sam build` (template.yaml: Metadata BuildMethod: makefile) runs build-<LogicalId> with
# ARTIFACTS_DIR set; the recipes are infra/lambda_build.py, which tests/infrastructure/test_packaging.py runs
# too. Needs the runtime's Python (the .pyc are for its minor version): python3.13 on PATH, or PYTHON=... .

ROOT := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
PYTHON ?= python3.13
UV ?= uv
BUILD := "$(PYTHON)" "$(ROOT)infra/lambda_build.py"

# requirements.lock: pyproject.toml's [project].dependencies resolved for the functions (CPython 3.13 on
# Linux arm64, Amazon Linux 2023), wheels only, with hashes. `make lock` after editing the dependencies (keeps
# the other pins), `make lock-upgrade` to move everything to the newest versions allowed. Needs uv.
LOCK_COMMAND := $(UV) pip compile pyproject.toml --python-version 3.13 --python-platform aarch64-manylinux_2_34 \
	--only-binary :all: --generate-hashes --output-file requirements.lock

.PHONY: build-DependenciesLayer lock lock-upgrade

# The layer every function uses: the locked dependencies under python/ (Lambda puts /opt/python on sys.path).
build-DependenciesLayer:
	$(BUILD) dependencies "$(ARTIFACTS_DIR)"

# Every function: handlers/ and shared/, nothing else of the checkout.
build-%Function:
	$(BUILD) code "$(ARTIFACTS_DIR)"

lock:
	cd "$(ROOT)" && $(LOCK_COMMAND)

lock-upgrade:
	cd "$(ROOT)" && $(LOCK_COMMAND) --upgrade
