# The two commands the README promises. Both install what they need first
# (a CPU torch build only if no torch is present, so a GPU build is kept).
PY ?= python3

.install.stamp: pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[dev]"
	touch $@

install: .install.stamp

test: .install.stamp
	$(PY) -m pytest -q tests

# the public math sets beside the checkout, when present (else $$THINKFAST_DATA, else the hub)
SHARED_DATA := $(wildcard $(CURDIR)/../shared/data)

run: .install.stamp
	THINKFAST_DATA="$${THINKFAST_DATA:-$(SHARED_DATA)}" $(PY) -m thinkfast run

.PHONY: install test run
