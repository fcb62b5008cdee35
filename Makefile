# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test unit services-up services-down bench lock

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

## Start local Kafka, S3 and registry, then run the demo end to end.
demo: $(BIN)/.installed
	infra/services up
	eval "$$(infra/services env)" && $(BIN)/archiver demo

## Every test: unit, then integration against real services (reused if `infra/services up` ran,
## otherwise started on free ports for the session and stopped afterwards).
test: $(BIN)/.installed
	$(BIN)/pytest

unit: $(BIN)/.installed
	$(BIN)/pytest -m unit

services-up:
	infra/services up

services-down:
	infra/services down

## Regenerate the pinned versions every install uses.
lock: $(BIN)/.installed
	$(BIN)/pip freeze --exclude-editable | grep -v '^archiver' > constraints.txt
