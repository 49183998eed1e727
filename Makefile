# The two commands of the README: `make demo` and `make test`. Both run setup first (idempotent).
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: setup demo test doctor clean-venv

setup:
	VENV=$(VENV) scripts/setup.sh

demo: setup
	$(VENV)/bin/scalesim demo

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

doctor: setup
	$(VENV)/bin/scalesim doctor

clean-venv:
	rm -rf $(VENV)
