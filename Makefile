# The two entry points of the README. Both first run the idempotent set-up, which
# keeps its virtual environment outside the clone (see tools/misc/setup_env.sh).
export DINOLORA_VENV ?= $(HOME)/.cache/dinolora-mmseg/venv
PYTHON := $(DINOLORA_VENV)/bin/python

.PHONY: setup demo test

setup:
	bash tools/misc/setup_env.sh

demo: setup
	bash tools/misc/demo.sh $(PYTHON)

test: setup
	$(PYTHON) -m pytest -q tests
